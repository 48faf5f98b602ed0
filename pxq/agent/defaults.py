"""Defaults of options stated by more than one part of pxq (the command line's flags, the agent's
options, a collector, a protocol parser): each is defined here once, and the others import it.
Nothing is imported here, so even the command line's parser reads it for free."""

# Bytes of each request/response body kept in a row (the true size is kept apart), as Pixie's
# default; the socket tracer copies no more of a body from the kernel than this.
DEFAULT_BODY_LIMIT = 1024

# The node agent's (pxq agent serve, pxq.agent.daemon): where it listens, how much history it keeps
# per table, its CPU profiler's rate; `pxq agent serve --help` states them.
DEFAULT_PORT = 7100
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_RETENTION_S = 15 * 60.0
DEFAULT_TABLE_BUDGET_MB = 64
DEFAULT_PROFILER_HZ = 19

# How long an on-demand collector may take to start (compile and attach its BPF program: 65 s was
# seen inside a loaded agent): the agent gives a query up past it (its on_demand_attach_max, at
# most this), and a client waits this much beyond the agent's on_demand_max, so it hears why.
ON_DEMAND_ATTACH_S = 120.0
