"""pxq's command line (pxq.cli.main)."""

import sys as _sys

if _sys.argv[1:3] == ["agent", "serve"]:  # the node agent: before pxq.cli.main's imports load pandas (RSS)
    from pxq.pandas_guard import keep_pandas_out

    keep_pandas_out()
