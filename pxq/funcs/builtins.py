"""PxL's builtin scalar functions (``px.<name>``), registered in ``pxq.funcs.registry.SCALARS``.

Importing this module registers them all; each group lives in its own module, whose docstring
lists the semantic choices made where Pixie's C++ leaves them open (division by zero, modulo sign,
nulls, byte versus character positions, ...):

- ``_operators``: add, subtract, multiply, divide, modulo, negate, invert, the comparisons and
  logicalAnd/logicalOr/logicalNot.
- ``_math``: floor, ceil, round, abs, sqrt, ln, log, log2, log10, exp, pow, bin, select,
  equals_any, now, the durations (seconds, ..., parse_duration), time_to_int64/int64_to_time and the semantic
  casts DurationNanos, Bytes, Percent, Time.
- ``_strings``: contains, find, substring, length, tolower, toupper, trim, strip_prefix,
  regex_match, replace, atoi, itoa, pluck, pluck_int64, pluck_float64, pluck_array.
- ``_sql``: normalize_pgsql, normalize_mysql.
- ``_metadata``: upid_to_* lookups, the Kubernetes lookups by IP or id (ip_to_pod_id,
  pod_id_to_pod_name, ...: "" off Kubernetes), http_resp_message, _exec_hostname, _exec_host_num_cpus.
- ``_net``: nslookup.
"""

from __future__ import annotations

from pxq.funcs import _math, _metadata, _net, _operators, _sql, _strings  # noqa: F401  (they register on import)
