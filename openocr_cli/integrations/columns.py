"""One image's result as a table row, the same for every engine and for `predict --save-format parquet`.

Columns (Arrow types; what `det_results.txt` holds, as columns):

    path      string                 the image's path (or the name its dataset gave it)
    width     int32                  source image size; null for an unreadable image
    height    int32
    polygons  list<list<list<int32>>>  one [[x, y], ...] per region, source pixels, as det_results.txt
    scores    list<double>           one score per region, rounded to 6 decimals as det_results.txt
    error     string                 why the image could not be read; null when it was
    tiling    string                 how many tiles ran and why; null when it ran whole

pyarrow is imported only when a table is built (the Ray extra and pandas bring it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from openocr_cli.errors import UserError
from openocr_cli.inference.results import Result
from openocr_cli.postprocess import Detection

PARQUET_NAME = "det_results.parquet"
COLUMNS = ("path", "width", "height", "polygons", "scores", "error", "tiling")


def schema(extra: Optional[dict] = None):
    """The Arrow schema of the columns above (plus `extra` {name: type})."""
    import pyarrow as pa

    fields = [("path", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
              ("polygons", pa.list_(pa.list_(pa.list_(pa.int32())))), ("scores", pa.list_(pa.float64())),
              ("error", pa.string()), ("tiling", pa.string())]
    return pa.schema(fields + list((extra or {}).items()))


def result_row(result: Result, path: Optional[str] = None) -> dict[str, Any]:
    """`result` as one row; `path` replaces its name (an in-memory image's path from its dataset)."""
    ok = result.error is None and result.src_hw is not None
    boxes = result.to_json()
    return {"path": path if path is not None else result.source, "width": result.src_hw[1] if ok else None,
            "height": result.src_hw[0] if ok else None, "polygons": [box["points"] for box in boxes],
            "scores": [box["score"] for box in boxes], "error": result.error, "tiling": result.tiling}


def row_result(row: dict[str, Any], index: int) -> Result:
    """A row back as a Result whose det_results.txt line and JSONL record are the ones its image gave."""
    detections = [Detection(np.asarray(points, dtype=np.int32), float(score))
                  for points, score in zip(row["polygons"] or [], row["scores"] or [])]
    size = (row["height"], row["width"]) if row.get("width") is not None else None
    return Result(index, row["path"], detections, error=row.get("error"), src_hw=size, tiling=row.get("tiling"))


def table(rows: list[dict[str, Any]], extra: Optional[dict] = None):
    """Rows as an Arrow table of `schema(extra)`."""
    import pyarrow as pa

    names = schema(extra).names
    return pa.Table.from_pydict({name: [row.get(name) for row in rows] for name in names}, schema=schema(extra))


class ParquetResults:
    """OUTPUT/det_results.parquet written as results come (a row group per `flush_rows` rows), in input order;
    `close` finishes the file, `abort` removes it (an interrupted run leaves no file that looks complete)."""

    def __init__(self, output: Path, flush_rows: int = 4096):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError("--save-format parquet needs pyarrow: pip install 'openocr-det[ray]' (or pyarrow).",
                            exit_code=2) from None
        self.path = output / PARQUET_NAME
        self._partial = output / (PARQUET_NAME + ".partial")
        self._writer = pq.ParquetWriter(str(self._partial), schema())
        self._rows: list[dict] = []
        self.flush_rows = flush_rows
        self.rows = 0

    def add(self, result: Result) -> None:
        self._rows.append(result_row(result))
        if len(self._rows) >= self.flush_rows:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(table(self._rows))
            self.rows += len(self._rows)
            self._rows = []

    def close(self) -> Path:
        self._flush()
        self._writer.close()
        self._partial.replace(self.path)
        return self.path

    def abort(self) -> None:
        self._writer.close()
        self._partial.unlink(missing_ok=True)
