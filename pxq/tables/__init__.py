"""The table catalog: every table pxq knows, by name (Pixie's names)."""

from __future__ import annotations

from pxq.tables.catalog import COLLECTORS, TABLES
from pxq.tables.schema import ColumnSchema, TableSchema

CATALOG: dict[str, TableSchema] = {t.name: t for t in TABLES}
if len(CATALOG) != len(TABLES):  # pragma: no cover - a catalog edit error, caught at import
    raise ValueError("the catalog declares a table name twice")


def get_table(name: str) -> TableSchema | None:
    """The schema of table ``name``, or None if pxq has no such table."""
    return CATALOG.get(name)


def table_names() -> list[str]:
    """All table names, in catalog order."""
    return list(CATALOG)


__all__ = ["CATALOG", "COLLECTORS", "ColumnSchema", "TableSchema", "get_table", "table_names"]
