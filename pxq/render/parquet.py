"""Parquet: one file per display, ``<out>/<display>.parquet`` (``out`` is required).

Every page carries its checksum (as in capture files), so damage on disk is found on reading.
Columns keep their pxq type metadata (``pxq.type``/``pxq.semantic`` field metadata), so a
written result formats the same when read back and rendered again.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pxq.errors import UsageError
from pxq.render.base import output_paths


class ParquetWriter:
    name = "parquet"
    needs_out = True

    def write(self, results, out, *, console=None, max_rows=None):
        """Returns display → file written."""
        paths = output_paths(results, out, "parquet", self.name)
        for display, path in paths.items():
            try:
                pq.write_table(results[display], path, compression="zstd", write_page_checksum=True)
            except (OSError, pa.ArrowException) as exc:
                raise UsageError(f"{path}: cannot write Parquet: {str(exc).splitlines()[0]}") from None
        return paths
