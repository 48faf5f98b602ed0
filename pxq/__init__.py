"""pxq: a PxL query-language profiler for Linux hosts (eBPF protocol traces and CPU stacks)."""

__version__ = "0.1.0"


def run(script, args=None, source=None, **live):
    """Run a PxL script and return {display name: pandas.DataFrame}: replaying ``source`` (a capture
    directory), or without one collecting live (root) for ``duration=`` (default 10s); see pxq.api.run."""
    from pxq.api import run as _run

    return _run(script, args=args, source=source, **live)


def chart(data, kind="timeseries", x=None, y=None, by=None, title=None):
    """One chart of a display (a %%pxq cell's DataFrame, any DataFrame, an Arrow table), shown in
    a notebook: kind "timeseries", "bar", "stat", "graph" or "flamegraph"; see pxq.notebook.chart."""
    from pxq.notebook import chart as _chart

    return _chart(data, kind, x=x, y=y, by=by, title=title)


def load_ipython_extension(ipython):
    """`%load_ext pxq` registers the `%%pxq` cell magic (see pxq.notebook)."""
    from pxq.notebook import load_ipython_extension as _load

    _load(ipython)


def __getattr__(name):
    """``pxq.Session``: a live session across queries (see pxq.api.Session), imported on use."""
    if name == "Session":
        from pxq.api import Session

        return Session
    raise AttributeError(f"module 'pxq' has no attribute {name!r}")
