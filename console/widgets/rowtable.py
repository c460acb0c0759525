"""A DataTable whose cell updates repaint only the rows they belong to.

Textual's ``DataTable.update_cell`` bumps one table-wide counter that is part of every render-cache key,
so a single changed cell re-renders every visible cell and leaves the superseded entries in the caches
until they are evicted (measured with 40 SSH sessions at one update per second: ~40 ms of CPU per update
per session and RSS growing by ~13 MiB per session, bench/ssh.py). :meth:`RowTable.update_rows` changes
the cells in place, drops only the cache entries of those rows and refreshes only their regions, so the
compositor re-renders and sends just the changed lines.

This reaches into DataTable's caches (Textual is pinned in pyproject.toml); tests/test_rowtable.py checks
that the table shows exactly what a freshly built one would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey


class RowTable(DataTable[Text]):
    def update_rows(self, changes: Mapping[str, Mapping[str, Text]]) -> None:
        """Set ``changes[row][column]`` and repaint those rows only (no column width changes)."""
        rows: set[RowKey] = set()
        cells_changed: set[tuple[RowKey, ColumnKey]] = set()
        for row, cells in changes.items():
            key = RowKey(row)
            data = self._data.get(key)
            if data is None or not cells:
                continue
            for column, value in cells.items():
                data[ColumnKey(column)] = value
                cells_changed.add((key, ColumnKey(column)))
            rows.add(key)
        if not rows:
            return
        # Cells are cached by (row key, column key, ...): only the changed ones are rendered again. Rows
        # (by row key first) and row renderables (by update count, row index) are re-assembled from them.
        cell_cache, row_cache = self._cell_render_cache, self._row_render_cache
        for k in [k for k in cell_cache.keys() if (k[0], k[1]) in cells_changed]:  # noqa: SIM118 (not iterable)
            cell_cache.discard(k)
        for k in [k for k in row_cache.keys() if k[0] in rows]:  # noqa: SIM118
            row_cache.discard(k)
        indexes = [i for i in (self._row_locations.get(k) for k in rows) if i is not None]
        for index in indexes:
            self._row_renderable_cache.discard((self._update_count, index))
        self._line_cache.clear()  # keyed by screen line: cheap to rebuild from the cached rows
        for index in indexes:
            self.refresh_row(index)

    def sync(self, rows: Sequence[tuple[str, Sequence[Text]]]) -> bool:
        """Show ``rows`` ((key, one cell per column), in order). When the keys are the same as shown, only
        the cells that differ are updated; otherwise the table is rebuilt. Returns True if rebuilt (the
        cursor is then back on the first row: the caller restores it)."""
        if [str(r.key.value) for r in self.ordered_rows] != [key for key, _cells in rows]:
            self.clear()
            for key, cells in rows:
                self.add_row(*cells, key=key)
            return True
        columns = [str(c.key.value) for c in self.ordered_columns]
        changes: dict[str, dict[str, Text]] = {}
        for key, cells in rows:
            shown = self.get_row(key)
            changed = {col: new for col, old, new in zip(columns, shown, cells, strict=True) if not _same(old, new)}
            if changed:
                changes[key] = changed
        self.update_rows(changes)
        return False


def _same(a: object, b: Text) -> bool:
    return isinstance(a, Text) and a.plain == b.plain and a.style == b.style and a.spans == b.spans
