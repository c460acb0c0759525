"""RowTable.update_rows: the table shows exactly what a table built with the new values shows, and only the
changed rows are re-rendered."""

from __future__ import annotations

from rich.text import Text
from textual.app import App, ComposeResult
from textual.cache import LRUCache
from textual.strip import Strip

from wasmbed.console.widgets.rowtable import RowTable

COLUMNS = ("name", "state", "age")


def rows(n: int, changed: dict[int, dict[str, str]] | None = None) -> list[dict[str, str]]:
    out = [{"name": f"board-{i}", "state": "running", "age": f"{i}s"} for i in range(n)]
    for i, cells in (changed or {}).items():
        out[i].update(cells)
    return out


class TableApp(App[None]):
    def __init__(self, data: list[dict[str, str]]) -> None:
        super().__init__()
        self.data = data

    def compose(self) -> ComposeResult:
        yield RowTable(id="t", cursor_type="row")

    def on_mount(self) -> None:
        t = self.query_one(RowTable)
        for c in COLUMNS:
            t.add_column(c.upper(), key=c, width=10)
        for r in self.data:
            t.add_row(*(Text(r[c], style="bold" if c == "state" else "") for c in COLUMNS), key=r["name"])


class RecordingCache(LRUCache):
    """The table's cell cache, noting which cells get rendered (stored) again."""

    def __init__(self, cache: LRUCache) -> None:
        super().__init__(cache.maxsize)
        for k in cache.keys():  # noqa: SIM118 (LRUCache is not iterable)
            super().__setitem__(k, cache[k])
        self.stored: list[tuple] = []

    def __setitem__(self, key: tuple, value: object) -> None:
        self.stored.append(key)
        super().__setitem__(key, value)


def lines(t: RowTable) -> list[list[tuple[str, object]]]:
    return [[(seg.text, seg.style) for seg in Strip(t.render_line(y))] for y in range(t.size.height)]


async def test_update_rows_matches_a_fresh_table_and_rerenders_only_changed_rows() -> None:
    change = {2: {"state": "stopped", "age": "99s"}, 5: {"age": "7m"}}
    fresh = TableApp(rows(8, change))
    async with fresh.run_test(size=(40, 12)) as pilot:
        await pilot.pause()
        expected = lines(fresh.query_one(RowTable))

    app = TableApp(rows(8))
    async with app.run_test(size=(40, 12)) as pilot:
        t = app.query_one(RowTable)
        await pilot.pause()
        before = lines(t)
        assert before != expected
        t._cell_render_cache = recording = RecordingCache(t._cell_render_cache)
        t.update_rows({f"board-{i}": {c: Text(v, style="bold" if c == "state" else "") for c, v in cells.items()}
                       for i, cells in change.items()})
        t.update_rows({"nosuch": {"age": Text("1s")}, "board-1": {}})  # unknown rows and empty changes: ignored
        await pilot.pause()
        after = lines(t)
        assert after == expected
        rendered = {(k[0].value, k[1].value) for k in recording.stored}
        assert rendered == {("board-2", "state"), ("board-2", "age"), ("board-5", "age")}  # the rest: from the cache
        assert t.get_cell("board-2", "state").plain == "stopped"


async def test_sync_updates_in_place_or_rebuilds_when_rows_come_and_go() -> None:
    app = TableApp(rows(3))
    async with app.run_test(size=(40, 12)) as pilot:
        t = app.query_one(RowTable)
        await pilot.pause()

        def as_rows(data: list[dict[str, str]]) -> list[tuple[str, list[Text]]]:
            return [(r["name"], [Text(r[c], style="bold" if c == "state" else "") for c in COLUMNS]) for r in data]

        lines(t)  # everything rendered (and cached) as it stands
        t._cell_render_cache = recording = RecordingCache(t._cell_render_cache)
        assert t.sync(as_rows(rows(3))) is False and recording.stored == []  # nothing changed: nothing rendered
        assert t.sync(as_rows(rows(3, {1: {"age": "5m"}}))) is False
        await pilot.pause()
        lines(t)
        assert {(k[0].value, k[1].value) for k in recording.stored} == {("board-1", "age")}
        assert t.sync(as_rows(rows(4))) is True  # a row more: rebuilt
        assert [str(r.key.value) for r in t.ordered_rows] == ["board-0", "board-1", "board-2", "board-3"]
        assert t.get_cell("board-1", "age").plain == "1s"
