"""Apps view: the catalog (modules the gateway accepted) and the deployments (per app, per device), live.

Keys: ``a`` add a module, ``d``/``enter`` deploy the highlighted app, ``s`` stop, ``S`` start, ``u`` update
to a new module, ``ctrl+d`` undeploy (asks), ``p`` show the deployment's progress, ``tab`` switches between
the two tables. Stop/start/update/undeploy act on the highlighted app of whichever table has the focus.
On an empty catalog the example apps (``apps/``, built into the cache) are added, so a fresh install can
deploy blinky in a few keystrokes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Static

from wasmbed.console import appdata, fleet
from wasmbed.console.errors import guarded, notify_error
from wasmbed.console.screens.deploy import DeployRequest, PickBoardsScreen, ProgressScreen, SourceScreen
from wasmbed.console.screens.modals import ConfirmScreen
from wasmbed.console.widgets.rowtable import RowTable
from wasmbed.gateway.facade import PermissionDenied, Role
from wasmbed.gateway.model import Application, AppModule, Device
from wasmbed.gateway.store import EventType

REPAINT_S = 0.2
APP_PHASE_STYLE = {"Running": "ok", "Failed": "bad", "PartiallyRunning": "warn", "Stopped": "idle"}

CATALOG_COLUMNS = (("name", "NAME", 14), ("version", "VERSION", 9), ("size", "SIZE", 9), ("sha", "SHA-256", 12),
                   ("imports", "IMPORTS", 44), ("valid", "VALIDATION", 40))
DEPLOY_COLUMNS = (("app", "APP", 12), ("version", "VERSION", 9), ("aphase", "APP PHASE", 16),
                  ("target", "BOARD / DEVICE", 30), ("phase", "PHASE", 18), ("progress", "PROGRESS", 15),
                  ("restarts", "RESTARTS", 8), ("error", "ERROR", 36))


class AppsScreen(Screen[None]):
    TITLE = "Apps"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "add", "add app"),
        Binding("d", "deploy", "deploy"),
        Binding("s", "stop", "stop"),
        Binding("S", "start", "start"),
        Binding("u", "update", "update"),
        Binding("ctrl+d", "undeploy", "undeploy"),
        Binding("p", "progress", "progress"),
        Binding("escape", "back", "back", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="apps")
        self._dirty = True
        self._styles: dict[str, str] = {}
        self._info = ""

    @property
    def wapp(self):
        return self.app

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="apps-info", classes="info")
        with Vertical(id="apps-body"):
            yield Label("Catalog", classes="pane-title")
            yield RowTable(id="catalog", cursor_type="row")
            yield Label("Deployments", classes="pane-title")
            yield RowTable(id="deployments", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        for table_id, columns in (("#catalog", CATALOG_COLUMNS), ("#deployments", DEPLOY_COLUMNS)):
            table = self.query_one(table_id, DataTable)
            for key, label, width in columns:
                table.add_column(label, key=key, width=width)
        self._restyle()
        self.app.theme_changed_signal.subscribe(self, lambda _t: self._on_theme())
        self.run_worker(self._watch(), name="apps-watch", group="watch", exit_on_error=False)
        self.set_interval(REPAINT_S, self.flush)
        self.flush()
        self.query_one("#catalog", DataTable).focus()
        app = self.wapp
        if getattr(app, "offer_examples", True) and not app.gateway.apps() and app.caller.role >= Role.OPERATOR:
            app.offer_examples = False  # once per session
            self.run_worker(self._add_examples(), group="actions", exit_on_error=False)

    async def _add_examples(self) -> None:
        added = await guarded(self, "adding the example apps", appdata.add_examples(self.wapp.gateway,
                                                                                    self.wapp.caller))
        if added:
            self.notify(f"empty catalog: added the example apps {', '.join(added)}. "
                        "d deploys the highlighted one.", timeout=8)
            self._dirty = True

    async def _watch(self) -> None:
        with self.wapp.gateway.watch(None, snapshot=False) as w:
            async for ev in w:
                if ev.type is EventType.OVERFLOW or isinstance(ev.object, Application | AppModule | Device):
                    self._dirty = True

    # -- painting ----------------------------------------------------------------------------------------

    def _on_theme(self) -> None:
        self._restyle()
        self._dirty = True
        self.flush()

    def _restyle(self) -> None:
        v = self.app.theme_variables
        self._styles = {"": "", "name": "bold", "ok": v.get("phase-ok", "green"), "warn": v.get("phase-warn", "yellow"),
                        "bad": v.get("phase-bad", "red"), "idle": v.get("phase-idle", "grey50")}

    def _text(self, text: str, style: str = "") -> Text:
        return Text(text, style=self._styles.get(style, style), no_wrap=True, overflow="ellipsis")

    def on_screen_resume(self) -> None:
        self.flush()

    def flush(self) -> None:
        if not self._dirty or not self.is_current:
            return
        self._dirty = False
        gw = self.wapp.gateway
        board_types = {d.spec.board for d in gw.devices() if d.spec.board}
        catalog = self.query_one("#catalog", RowTable)
        keep = self._cursor(catalog)
        apps = sorted(gw.apps(), key=lambda m: m.name)
        deployed = {a.name: a for a in gw.applications()}
        rows: list[tuple[str, list[Text]]] = []
        for m in apps:
            s = m.spec
            valid, vstyle = appdata.validation_text(gw, m, board_types)
            rows.append((m.name, [
                self._text(m.name, "name"), self._text(s.version), self._text(fleet.fmt_bytes(s.size)),
                self._text(s.module_sha256[:12]), self._text(", ".join(s.imports) or "—"), self._text(valid, vstyle)]))
        if catalog.sync(rows):  # unchanged rows and cells are not re-rendered
            self._restore(catalog, keep)
        table = self.query_one("#deployments", RowTable)
        keep = self._cursor(table)
        rows = []
        for app in sorted(deployed.values(), key=lambda a: a.name):
            aphase = app.status.phase.value
            astyle = APP_PHASE_STYLE.get(aphase, "warn")
            states = appdata.target_states(gw, app)
            if not states:
                rows.append((f"{app.name}/", [
                    self._text(app.name, "name"), self._text(app.spec.version), self._text(aphase, astyle),
                    self._text("no matching device", "idle"), self._text("—", "idle"), self._text(""),
                    self._text(""), self._text(app.status.message or "")]))
            for i, st in enumerate(states):
                progress = appdata.progress_bar(st.bytes_sent, st.size) if st.phase == "Deploying" else ""
                first = i == 0  # the app's own cells only on its first row
                rows.append((f"{app.name}/{st.device}", [
                    self._text(app.name if first else "", "name"), self._text(app.spec.version if first else ""),
                    self._text(aphase if first else "", astyle), self._text(st.label), self._text(st.phase, st.style),
                    self._text(progress), self._text(str(st.restarts)), self._text(st.error or "", "bad")]))
        if table.sync(rows):
            self._restore(table, keep)
        running = sum(a.status.phase.value == "Running" for a in deployed.values())
        info = (f"{len(apps)} apps in the catalog · {len(deployed)} deployed ({running} running) · "
                "a add · d deploy · s stop · S start · u update · ctrl+d undeploy · tab switches table")
        if info != self._info:  # Static.update re-lays out the screen even for the same text
            self._info = info
            self.query_one("#apps-info", Static).update(info)

    @staticmethod
    def _cursor(table: DataTable) -> str | None:
        if not table.row_count:
            return None
        with contextlib.suppress(Exception):
            return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        return None

    @staticmethod
    def _restore(table: DataTable, key: str | None) -> None:
        if key is None:
            return
        with contextlib.suppress(Exception):
            table.move_cursor(row=table.get_row_index(key), animate=False)

    def select(self, app: str) -> bool:
        """Highlight an app in the catalog."""
        self.flush()
        table = self.query_one("#catalog", DataTable)
        try:
            table.move_cursor(row=table.get_row_index(app), animate=False)
        except Exception:
            return False
        return True

    # -- selection --------------------------------------------------------------------------------------

    def selected_app(self) -> str | None:
        """The highlighted app: of the deployments table if it has the focus, else of the catalog."""
        deployments = self.query_one("#deployments", DataTable)
        if deployments.has_focus:
            key = self._cursor(deployments)
            if key is not None:
                return key.partition("/")[0]
        return self._cursor(self.query_one("#catalog", DataTable))

    def _need_app(self, deployed: bool = False) -> str | None:
        name = self.selected_app()
        if name is None:
            self.notify("No app selected: the catalog is empty (a adds one).", severity="warning")
            return None
        if deployed and self.wapp.gateway.application(name) is None:
            self.notify(f"{name} is not deployed (d deploys it).", severity="warning")
            return None
        return name

    def _may(self, action: str, audit_as: str, target: str | None = None) -> bool:
        """Refuse early (the facade's wording, audited like the call) rather than after a dialog; the
        facade checks again when the call is made."""
        try:
            self.wapp.gateway.authorize(self.wapp.caller, Role.OPERATOR, action, audit_as=audit_as, target=target)
        except PermissionDenied as exc:
            notify_error(self, action, exc)
            return False
        return True

    # -- actions ----------------------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.switch_mode("boards")

    def action_add(self) -> None:
        if not self._may("add apps", "add app"):
            return
        app = self.wapp

        async def submit(source: str, name: str | None, version: str | None) -> str:
            path = appdata.resolve_source(source)
            if name is None and not Path(source).expanduser().is_file():
                name = source  # an example, by its name
            entry = await app.gateway.add_app(app.caller, path, name=name, version=version)
            return entry.name

        def added(name: str | None) -> None:
            if name:
                self.notify(f"app {name} added to the catalog (d deploys it)", timeout=4)
                self._dirty = True
                self.call_after_refresh(self.select, name)

        self.app.push_screen(SourceScreen("Add an app to the catalog", submit), callback=added)

    @on(DataTable.RowSelected, "#catalog")
    def _catalog_enter(self) -> None:
        self.action_deploy()

    @on(DataTable.RowSelected, "#deployments")
    def _deployment_enter(self) -> None:
        self.action_progress()

    def action_deploy(self) -> None:
        name = self._need_app()
        if name is None or not self._may(f"deploy app {name}", "deploy", name):
            return
        gw = self.wapp.gateway
        if gw.application(name) is not None:
            self.notify(f"{name} is already deployed: u updates it, s/S stop/start, ctrl+d undeploys.",
                        severity="warning")
            return
        entry = gw.app(name)
        if entry is None:
            return
        self.app.push_screen(PickBoardsScreen(name, entry.spec.version, gw.devices()), callback=self._picked)

    def _picked(self, req: DeployRequest | None) -> None:
        if req is None:
            return
        gw = self.wapp.gateway
        labels = {d.name: PickBoardsScreen._label(d) for d in gw.devices()}
        entry = gw.app(req.app)
        version = entry.spec.version if entry else ""

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._deploy(req), group="actions", exit_on_error=False)

        self.app.push_screen(ConfirmScreen(f"Deploy {req.app} {version} to {req.describe(labels)}?",
                                           confirm_label="Deploy", default_yes=True), callback=answered)

    async def _deploy(self, req: DeployRequest) -> None:
        app = self.wapp
        targets = req.selector or req.devices
        res = await guarded(self, f"deploy {req.app}", app.gateway.deploy(app.caller, req.app, targets,
                                                                          config=req.config))
        if res is not None:
            self._dirty = True
            self.app.push_screen(ProgressScreen(req.app, "Deploying"))

    def _app_action(self, verb: str, method: str, progress: str | None = None) -> None:
        name = self._need_app(deployed=True)
        if name is None or not self._may(f"{verb} app {name}", f"{verb} app", name):
            return
        app = self.wapp

        async def run() -> None:
            if await guarded(self, f"{verb} {name}", getattr(app.gateway, method)(app.caller, name)) is not None:
                self._dirty = True
                if progress:
                    self.app.push_screen(ProgressScreen(name, progress))
                else:
                    self.notify(f"{name}: {verb} requested", timeout=3)

        self.run_worker(run(), group="actions", exit_on_error=False)

    def action_stop(self) -> None:
        self._app_action("stop", "stop_app")

    def action_start(self) -> None:
        self._app_action("start", "start_app", progress="Starting")

    def action_progress(self) -> None:
        name = self._need_app(deployed=True)
        if name is not None:
            self.app.push_screen(ProgressScreen(name, "Deployment of"))

    def action_update(self) -> None:
        name = self._need_app(deployed=True)
        if name is None or not self._may(f"update app {name}", "update app", name):
            return
        app = self.wapp

        async def submit(source: str, _name: str | None, version: str | None) -> str:
            path = appdata.resolve_source(source)
            await app.gateway.update_app(app.caller, name, path, version=version)
            return name

        def updated(result: str | None) -> None:
            if result:
                self._dirty = True
                self.app.push_screen(ProgressScreen(result, "Updating"))

        self.app.push_screen(SourceScreen(f"Update {name} to a new module", submit, ask_name=False,
                                          button="Update"), callback=updated)

    def action_undeploy(self) -> None:
        name = self._need_app(deployed=True)
        if name is None or not self._may(f"undeploy app {name}", "undeploy", name):
            return
        app = self.wapp

        async def run() -> None:
            gone = await guarded(self, f"undeploy {name}", app.gateway.undeploy(app.caller, name, wait_s=30))
            self._dirty = True
            if gone:
                self.notify(f"{name} undeployed: removed from every device", timeout=4)
            elif gone is False:
                self.notify(f"{name}: still being removed (a device is not connected); it goes when it is",
                            severity="warning", timeout=8)

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(run(), group="actions", exit_on_error=False)

        self.app.push_screen(ConfirmScreen(f"Undeploy {name}? It is stopped and removed from every device.",
                                           confirm_label="Undeploy"), callback=answered)
