"""Replay captures: a directory of ``<table>.parquet`` files (catalog names) plus ``capture.json``.

``write_capture`` records tables for later; ``open_capture`` opens one and ``Capture.scan`` reads a
table's columns within a time window, always with the catalog's Arrow types.
"""

from pxq.replay.meta import META_FILE
from pxq.replay.reader import Capture, open_capture
from pxq.replay.writer import write_capture

__all__ = ["META_FILE", "Capture", "open_capture", "write_capture"]
