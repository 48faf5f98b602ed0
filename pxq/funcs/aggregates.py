"""PxL's aggregate functions (UDAs), used as ``out=('column', px.name)`` in ``groupby(...).agg``.

These are declarations (types, semantics, docs); ``pxq.exec.aggregate`` runs them with Acero's hash
aggregates. Aggregates keep the input column's semantic type (the mean of a latency is still a
duration), except ``count`` and ``quantiles``.

Choices:
- ``count`` counts rows, nulls included (Pixie: "independent of which column").
- ``sum``/``mean``/``min``/``max`` skip nulls; a group with no non-null value gives null.
- ``any`` returns the first non-null value of the group (null only if all are null).
- ``quantiles`` is a t-digest (Arrow's, compression 1000 like Pixie's): measured rank error at most
  0.1 percentage point (see ``pxq.exec.aggregate``). Its semantic type is JSON (Pixie has a separate
  "duration quantiles" type that pxq's SemanticType lacks).
"""

from __future__ import annotations

from pxq.funcs.registry import aggregate
from pxq.types import DataType, SemanticType

T = DataType
S = SemanticType
NUMERIC_OR_BOOL = frozenset({T.INT64, T.FLOAT64, T.BOOLEAN})
ORDERED = frozenset({T.INT64, T.FLOAT64, T.TIME64NS, T.STRING, T.BOOLEAN})


def _keep(sems: tuple[SemanticType, ...]) -> SemanticType:
    return sems[0]


def _keep_quantity(sems: tuple[SemanticType, ...]) -> SemanticType:
    # A sum of times is not a time.
    return S.NONE if sems[0] is S.TIME else sems[0]


count = aggregate("count", None, T.INT64, "Number of rows in the group.")
sum_ = aggregate("sum", NUMERIC_OR_BOOL, lambda t: T.FLOAT64 if t[0] is T.FLOAT64 else T.INT64,
                 "Sum of the group's values (a BOOLEAN sums to the number of trues).", semantic=_keep_quantity)
mean = aggregate("mean", NUMERIC_OR_BOOL, T.FLOAT64,
                 "Arithmetic mean, FLOAT64 (of a BOOLEAN: the fraction of trues).", semantic=_keep)
min_ = aggregate("min", ORDERED, lambda t: t[0], "Smallest value in the group.", semantic=_keep)
max_ = aggregate("max", ORDERED, lambda t: t[0], "Largest value in the group.", semantic=_keep)
any_ = aggregate("any", None, lambda t: t[0], "Some value of the group (the first non-null one).",
                 semantic=_keep)
quantiles = aggregate("quantiles", frozenset({T.INT64, T.FLOAT64}), T.STRING,
                      'Approximate distribution (t-digest) as JSON {"p01":..,"p10":..,"p25":..,"p50":..,'
                      '"p75":..,"p90":..,"p99":..}; read it with px.pluck_float64.', semantic=S.JSON)
