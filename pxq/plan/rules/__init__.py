"""Optimizer rules, one file each, applied in this order by ``pxq.plan.optimize``.

Every rule is a module with ``NAME``, a one-line ``DOC`` and ``apply(graph) -> graph``; a rule
must not change a script's results (tests run every corpus query optimized and unoptimized).
"""

from pxq.plan.rules import eager_aggregation, fold_constants, merge_maps, prune_columns, push_filters

RULES = (fold_constants, eager_aggregation, push_filters, merge_maps, prune_columns)
