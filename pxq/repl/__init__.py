"""``pxq repl``: an interactive PxL session.

The session's state (:mod:`pxq.repl.session`: the statements compiled so far, the data source,
the last result) is apart from the terminal (:mod:`pxq.repl.terminal`: prompt_toolkit's line
editor), so that what a session does can be tested without a terminal. Completion
(:mod:`pxq.repl.completion`) reads the session; the live source (:mod:`pxq.agent.live_window`,
shared with notebook sessions) keeps a rolling window of what the embedded agent collects.
"""

from pxq.repl.session import ReplSession, Reply

__all__ = ["Reply", "ReplSession"]
