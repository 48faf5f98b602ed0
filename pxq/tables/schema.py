"""How a table is declared: the single source of truth read by the compiler, the agent, the
replay reader, the renderers, `pxq scripts`/`pxq tables` and the REPL's completion."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from pxq.types import DataType, SemanticType, arrow_type


@dataclass(frozen=True)
class ColumnSchema:
    name: str
    type: DataType
    semantic: SemanticType = SemanticType.NONE
    doc: str = ""

    @property
    def arrow_type(self) -> pa.DataType:
        return arrow_type(self.type)


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: tuple[ColumnSchema, ...]
    doc: str
    # Name of the agent collector that fills this table ("socket_tracer", "perf_profiler", ...).
    collector: str
    # Protocol name for socket-tracer tables, else None: the manifest asks the socket tracer for
    # the protocols of the tables a script reads, and the agent refuses one that
    # pxq.agent.protocols.registry does not parse. Selection is in user space: the kernel copies
    # every TCP connection's bytes until the tracker recognises no protocol and switches it off.
    protocol: str | None = None

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(names) != len(set(names)):
            raise ValueError(f"table {self.name} declares a column twice")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> ColumnSchema | None:
        for c in self.columns:
            if c.name == name:
                return c
        return None

    def arrow_schema(self, columns: tuple[str, ...] | None = None) -> pa.Schema:
        if columns is None:
            # The whole table's, made once: the agent asks for it with every batch it builds and
            # stores (some 20 us to build), and a pa.Schema is immutable.
            whole = self.__dict__.get("_whole_arrow_schema")
            if whole is None:
                whole = pa.schema([pa.field(c.name, c.arrow_type) for c in self.columns])
                object.__setattr__(self, "_whole_arrow_schema", whole)  # (frozen: not a field)
            return whole
        return pa.schema([pa.field(c.name, c.arrow_type) for c in (self.column(n) for n in columns)])
