"""PxL's aggregate functions (UDAs), used as ``out=('column', px.name)`` in ``groupby(...).agg``.

Each is one registry entry (``pxq.funcs.registry.aggregate``): its declaration (types, semantics,
docs; checked by the compiler) and how it runs on Acero's hash aggregates (called by
``pxq.exec.aggregate``, which does the grouping). Aggregates keep the input column's semantic type
(the mean of a latency is still a duration), except ``count`` and ``quantiles``.

Choices:
- ``count`` counts rows, nulls included (Pixie: "independent of which column").
- ``sum``/``mean``/``min``/``max`` skip nulls; a group with no non-null value gives null.
- ``sum`` and ``mean`` of INT64 add exactly (decimal128): a sum beyond INT64 is an ExecutionError,
  never a wrapped number, and a mean is the exact sum divided once (Pixie sums in double, which
  drops small values next to large ones).
- ``any`` returns the first non-null value of the group (null only if all are null).
- ``quantiles`` is a t-digest (Arrow's, compression 1000 like Pixie's) rendered as JSON text of the
  seven quantiles; NaN/inf and empty groups render as JSON ``null``. Its semantic type is JSON
  (Pixie has a separate "duration quantiles" type that pxq's SemanticType lacks). Accuracy, measured
  on log-normal, exponential, uniform and small-integer data of 5 to 1,000,000 values: every
  estimate lies between numpy.quantile(x, p - 0.001) and numpy.quantile(x, p + 0.001), i.e. its
  rank is off by at most 0.1 percentage point (one position for 1,000 values); groups of up to a
  few hundred values are exact up to interpolation between neighbouring values.
  tests/funcs/test_aggregate.py checks this with a 0.2-point margin.
  Over many agents (pxq.broker) each agent sends per-group t-digest centroids instead (Arrow's
  digest state cannot leave pyarrow), at most 1000 per group, built from each group's sorted
  values with numpy (``_digest_states``: Dunning's arcsine scale, every group at once; it replaced
  fastdigest, whose one call per group cost more than the sort). The broker merges the agents'
  centroids by taking them together (re-compressing would only save space) and reads the
  quantiles off them (``_digest_quantiles``): the same 0.1-point bound was measured
  (tests/broker/test_partial.py checks 0.2), and groups of at most 1000 values on each agent give
  numpy's linear quantiles exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pxq.errors import ExecutionError
from pxq.funcs.registry import AggregatePlan, aggregate
from pxq.types import DataType, SemanticType

T = DataType
S = SemanticType
NUMERIC_OR_BOOL = frozenset({T.INT64, T.FLOAT64, T.BOOLEAN})
ORDERED = frozenset({T.INT64, T.FLOAT64, T.TIME64NS, T.STRING, T.BOOLEAN})

QUANTILES = (0.01, 0.10, 0.25, 0.50, 0.75, 0.90, 0.99)
QUANTILE_KEYS = ("p01", "p10", "p25", "p50", "p75", "p90", "p99")
TDIGEST_DELTA = 1000  # Pixie's tdigest compression
DIGEST_CENTROIDS = 1000  # at most per group in an agent's partial state (over many agents)
_SORT_EACH_GROUP_UP_TO = 4096  # groups; more: one lexsort (see _digest_states)

# Exact integer sums: Acero sums decimal128 inputs into decimal128(38, 0), which holds any sum of
# fewer than 10**19 int64 values (its int64 sum would wrap silently).
_EXACT = pa.decimal128(19, 0)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_COUNT_VALID = pc.CountOptions(mode="only_valid")


def _keep(sems: tuple[SemanticType, ...]) -> SemanticType:
    return sems[0]


def _keep_quantity(sems: tuple[SemanticType, ...]) -> SemanticType:
    # A sum of times is not a time.
    return S.NONE if sems[0] is S.TIME else sems[0]


def _only(finish: Callable[[pa.ChunkedArray], pa.ChunkedArray]) -> Callable[[list[pa.ChunkedArray]], pa.ChunkedArray]:
    return lambda outputs: finish(outputs[0])


_SAME = _only(lambda out: out)


def _acero(function: str, options: object = None) -> Callable[[pa.ChunkedArray, str], AggregatePlan]:
    """The plan of an aggregate that is one Acero hash aggregate, its output unchanged."""
    return lambda values, column: (values, [(function, options)], _SAME)


def _checked_int64_sum(column: str) -> Callable[[pa.ChunkedArray], pa.ChunkedArray]:
    def finish(sums: pa.ChunkedArray) -> pa.ChunkedArray:
        low, high = pc.min_max(sums).values()
        for bound in (low, high):
            if bound.is_valid and not _INT64_MIN <= int(bound.as_py()) <= _INT64_MAX:
                raise ExecutionError(
                    f"px.sum of {column!r} is {int(bound.as_py()):,}, beyond INT64; "
                    f"hint: sum it as FLOAT64, e.g. df.{column}_f = df.{column} * 1.0"
                )
        return pc.cast(sums, pa.int64())

    return finish


def _ratio(sums: pa.ChunkedArray, counts: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.divide(pc.cast(sums, pa.float64()), pc.cast(counts, pa.float64()))


def _sum_plan(values: pa.ChunkedArray, column: str) -> AggregatePlan:
    if pa.types.is_boolean(values.type):  # Acero's sum takes no booleans; Pixie's counts the trues
        return pc.cast(values, pa.int64()), [("sum", None)], _SAME
    if pa.types.is_integer(values.type):
        return pc.cast(values, _EXACT), [("sum", None)], _only(_checked_int64_sum(column))
    return values, [("sum", None)], _SAME


def _mean_plan(values: pa.ChunkedArray, column: str) -> AggregatePlan:
    if pa.types.is_boolean(values.type):  # the fraction of trues
        return pc.cast(values, pa.int64()), [("mean", None)], _SAME
    if pa.types.is_integer(values.type):
        # Exact sum, then one division: Acero's mean sums int64 as doubles, which loses small values
        # next to large ones (the mean of 5, -2**62, 7, 2**62 came out 0.0 instead of 3.0).
        return pc.cast(values, _EXACT), [("sum", None), ("count", _COUNT_VALID)], lambda out: _ratio(*out)
    return values, [("mean", None)], _SAME


def _quantiles_json(digests: pa.ChunkedArray) -> pa.ChunkedArray:
    """fixed_size_list<double>[7] from hash_tdigest -> '{"p01":1.5,...}' (null for no data)."""
    pieces: list[pa.ChunkedArray | str] = []
    for i, key in enumerate(QUANTILE_KEYS):
        value = pc.list_element(digests, i)
        text = pc.if_else(pc.is_finite(value), pc.cast(value, pa.string()), pa.scalar(None, pa.string()))
        pieces += ["{" if i == 0 else ",", f'"{key}":', pc.fill_null(text, "null")]
    pieces.append("}")
    return pc.binary_join_element_wise(*pieces, "")


def _quantiles_plan(values: pa.ChunkedArray, column: str) -> AggregatePlan:
    return values, [("tdigest", pc.TDigestOptions(q=list(QUANTILES), delta=TDIGEST_DELTA))], _only(_quantiles_json)


count = aggregate(
    "count", None, T.INT64, "Number of rows in the group.", plan=_acero("count", pc.CountOptions(mode="all")), empty=0
)  # Pixie: every row, whichever column
sum_ = aggregate(
    "sum",
    NUMERIC_OR_BOOL,
    lambda t: T.FLOAT64 if t[0] is T.FLOAT64 else T.INT64,
    "Sum of the group's values (a BOOLEAN sums to the number of trues).",
    semantic=_keep_quantity,
    plan=_sum_plan,
)
mean = aggregate(
    "mean",
    NUMERIC_OR_BOOL,
    T.FLOAT64,
    "Arithmetic mean, FLOAT64 (of a BOOLEAN: the fraction of trues).",
    semantic=_keep,
    plan=_mean_plan,
)
min_ = aggregate("min", ORDERED, lambda t: t[0], "Smallest value in the group.", semantic=_keep, plan=_acero("min"))
max_ = aggregate("max", ORDERED, lambda t: t[0], "Largest value in the group.", semantic=_keep, plan=_acero("max"))
# Acero's "first" skips nulls and, single-threaded, is deterministic; "one" may give null.
any_ = aggregate(
    "any",
    None,
    lambda t: t[0],
    "Some value of the group (the first non-null one).",
    semantic=_keep,
    plan=_acero("first"),
    ordered=True,
)
quantiles = aggregate(
    "quantiles",
    frozenset({T.INT64, T.FLOAT64}),
    T.STRING,
    'Approximate distribution (t-digest) as JSON {"p01":..,"p10":..,"p25":..,"p50":..,'
    '"p75":..,"p90":..,"p99":..}; read it with px.pluck_float64.',
    semantic=S.JSON,
    plan=_quantiles_plan,
    # no data: as for a group of nulls
    empty="{" + ",".join(f'"{key}":null' for key in QUANTILE_KEYS) + "}",
)


# ---------------------------------------------------------------------------------------------
# Split form, for one query over many agents (pxq.broker): each agent reduces its rows to a
# partial state per group, the broker merges the states (Pixie's UDA Update/Merge/Finalize).
#
# A ``PartialForm`` says, for an aggregate over a column of a given type: how an agent prepares the
# values and which Acero hash aggregates make its state columns (``partial``, optionally finished
# by ``state``), then per state column the Acero hash aggregate that merges the states of many
# agents (``merge``) and how the merged states become the value (``finish``). Quantiles' state is a
# t-digest as Arrow data (centroid means and weights, min, max per group; at most 1000 centroids,
# ``_digest_states``), so no agent ever sends its raw values. The broker merges digests by taking
# their centroids together and reads the quantiles off them (``_digest_quantiles``).

StatePlan = tuple[pa.ChunkedArray, list[tuple[str, object]]]


@dataclass(frozen=True)
class PartialForm:
    partial: Callable[[pa.ChunkedArray], StatePlan]
    # Per state column, the Acero function merging it; ("rows",): the finish gets each group's
    # state row numbers (a list per group) then the state columns as they came.
    merge: tuple[str, ...]
    finish: Callable[[list[pa.ChunkedArray], str], pa.ChunkedArray]
    state: Callable[[list[pa.ChunkedArray]], list[pa.ChunkedArray]] | None = None


def _exact_ints(values: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_boolean(values.type):
        return pc.cast(values, pa.int64())
    return pc.cast(values, _EXACT) if pa.types.is_integer(values.type) else values


def _sum_finish(states: list[pa.ChunkedArray], column: str) -> pa.ChunkedArray:
    if pa.types.is_decimal(states[0].type):
        return _checked_int64_sum(column)(states[0])
    return states[0]


def _mean_finish(states: list[pa.ChunkedArray], column: str) -> pa.ChunkedArray:
    sums, counts = states
    return pc.if_else(pc.equal(counts, 0), pa.scalar(None, pa.float64()), _ratio(sums, counts))


def _digest_states(outputs: list[pa.ChunkedArray]) -> list[pa.ChunkedArray]:
    """Each group's values (an Acero hash_list) -> its t-digest: centroid means, weights, min, max.

    Built from each group's sorted values, every group at once (numpy; no Python per value or
    centroid). The value of rank r (0-based) of a group of n belongs to centroid ceil(k((r + 1) / n)),
    k being Dunning's arcsine scale k(q) = C * (asin(2q - 1) / pi + 1/2), C = DIGEST_CENTROIDS: a
    centroid spans at most one unit of k (a few values at the tails, where p01 and p99 are read),
    and a group has at most C centroids. The centroids' edges come from the inverse of k (C + 1
    ranks per group), not from k of every value. A group of at most C values keeps each value as a
    centroid (the merge then gives numpy's linear quantiles exactly)."""
    lists = outputs[0].combine_chunks()
    sizes = np.diff(lists.offsets.to_numpy())
    groups = len(sizes)
    values = pc.cast(lists.flatten(), pa.float64()).to_numpy(zero_copy_only=False)  # nulls: NaN
    group_of = np.repeat(np.arange(groups), sizes)
    kept = ~np.isnan(values)  # nulls are skipped, as locally
    values, group_of = values[kept], group_of[kept]
    counts = np.bincount(group_of, minlength=groups)
    starts = np.cumsum(counts) - counts
    if groups <= _SORT_EACH_GROUP_UP_TO:
        for start, count in zip(starts.tolist(), counts.tolist()):
            values[start : start + count].sort()
    else:  # many small groups: one sort by (group, value) beats a Python loop over the groups
        values = values[np.lexsort((values, group_of))]
    # Where each centroid starts: every value of a small group; in a large one, the ranks that
    # reach each unit of k (the values with (r + 1) / n <= q_j are those of centroids <= j).
    small = counts <= DIGEST_CENTROIDS
    firsts = [np.flatnonzero(small[group_of])]
    large = np.flatnonzero(~small)
    if len(large):
        q = (np.sin(np.pi * (np.arange(DIGEST_CENTROIDS + 1) / DIGEST_CENTROIDS - 0.5)) + 1.0) / 2.0
        below = np.floor(np.outer(counts[large], q)).astype(np.int64)  # values in centroids <= j
        below[:, 0], below[:, -1] = 0, counts[large]
        edges = np.diff(below, axis=1) > 0
        firsts.append((starts[large][:, None] + below[:, :-1])[edges])
    first = np.sort(np.concatenate(firsts))
    weights = np.diff(np.append(first, len(values))).astype(np.float64)
    means = np.add.reduceat(values, first) / weights if len(first) else np.empty(0)
    per_group = np.bincount(group_of[first], minlength=groups)
    bounds = pa.array(np.concatenate([[0], np.cumsum(per_group)]).astype(np.int32))
    empty = counts == 0
    lows, highs = np.zeros(groups), np.zeros(groups)
    lows[~empty] = values[starts[~empty]]
    highs[~empty] = values[(starts + counts - 1)[~empty]]
    return [
        pa.chunked_array([pa.ListArray.from_arrays(bounds, pa.array(means, pa.float64()))]),
        pa.chunked_array([pa.ListArray.from_arrays(bounds, pa.array(weights, pa.float64()))]),
        pa.chunked_array([pa.array(lows, mask=empty)]),
        pa.chunked_array([pa.array(highs, mask=empty)]),
    ]


def _digest_quantiles(means: np.ndarray, weights: np.ndarray, low: float, high: float) -> list[float]:
    """The seven quantiles of a digest given as centroids (any order, e.g. several agents' digests
    together: their union is their merge before re-compression, which only saves space). Each
    centroid stands at the middle of the ranks it covers (0-based, like numpy's "linear" quantile,
    so a digest of single values gives numpy's answer exactly); between centroids, and from the
    minimum at rank 0 and to the maximum at the last rank, the value is interpolated linearly."""
    order = np.argsort(means, kind="stable")
    means, weights = means[order], weights[order]
    total = float(weights.sum())
    positions = np.cumsum(weights) - weights + (weights - 1.0) / 2.0
    last = total - 1.0
    xs = np.concatenate([[0.0], positions, [last]])
    ys = np.concatenate([[low], means, [high]])
    return [float(v) for v in np.interp(np.asarray(QUANTILES) * last, xs, ys)]


def _merged_quantiles(states: list[pa.ChunkedArray], column: str) -> pa.ChunkedArray:
    """Per group, the agents' digests (its state rows) merged, then the seven quantiles."""
    groups = states[0].combine_chunks()
    means_lists, weights_lists = (s.combine_chunks() for s in states[1:3])
    all_means = means_lists.flatten().to_numpy(zero_copy_only=False)
    all_weights = weights_lists.flatten().to_numpy(zero_copy_only=False)
    starts = means_lists.offsets.to_numpy()
    lows, highs = (s.to_numpy(zero_copy_only=False) for s in states[3:5])
    rows: list[list[float] | None] = []
    members_flat = groups.flatten().to_numpy()
    member_offsets = groups.offsets.to_numpy()
    for g in range(len(groups)):
        members = members_flat[member_offsets[g] : member_offsets[g + 1]]
        pieces = [np.arange(starts[r], starts[r + 1]) for r in members]
        picked = np.concatenate(pieces) if pieces else np.empty(0, dtype=np.int64)
        if picked.size == 0:
            rows.append(None)
            continue
        low, high = np.nanmin(lows[members]), np.nanmax(highs[members])
        rows.append(_digest_quantiles(all_means[picked], all_weights[picked], float(low), float(high)))
    return _quantiles_json(pa.chunked_array([pa.array(rows, pa.list_(pa.float64()))]))


PARTIAL_FORMS: dict[str, PartialForm] = {
    "count": PartialForm(lambda v: (v, [("count", pc.CountOptions(mode="all"))]), ("sum",), lambda s, _: s[0]),
    "sum": PartialForm(lambda v: (_exact_ints(v), [("sum", None)]), ("sum",), _sum_finish),
    "mean": PartialForm(
        lambda v: (_exact_ints(v), [("sum", None), ("count", _COUNT_VALID)]), ("sum", "sum"), _mean_finish
    ),
    "min": PartialForm(lambda v: (v, [("min", None)]), ("min",), lambda s, _: s[0]),
    "max": PartialForm(lambda v: (v, [("max", None)]), ("max",), lambda s, _: s[0]),
    "any": PartialForm(lambda v: (v, [("first", None)]), ("first",), lambda s, _: s[0]),
    "quantiles": PartialForm(lambda v: (v, [("list", None)]), ("rows",), _merged_quantiles, state=_digest_states),
}
