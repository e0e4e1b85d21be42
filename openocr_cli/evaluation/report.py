"""`eval --report DIR`: errors.json for relabelling and one self-contained HTML page to look at the errors.

The page is plain HTML and CSS (no scripts, nothing fetched from the network); every drawing is a file
under DIR/images/, with a ~320 px thumbnail under DIR/images/thumbs/ linking to it, so 500 images
load fast and stay readable. Images come worst first (most false positives + misses).
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np

from openocr_cli.data.images import ImageReadError, read_image
from openocr_cli.data.pdf import DEFAULT_PDF_DPI
from openocr_cli.errors import UserError
from openocr_cli.evaluation.details import ImageErrors, error_records
from openocr_cli.evaluation.evaluator import EvalResult

# BGR colours; the legend in the page uses the same ones.
MATCHED_BGR, FALSE_POSITIVE_BGR, MISSED_BGR, DONT_CARE_BGR = (0, 170, 0), (0, 0, 235), (235, 90, 0), (150, 150, 150)
TILE_BGR = (0, 200, 255)  # tile borders of a tiled image (yellow)
THUMB_WIDTH = 320
DASH = 7


def write_report(folder: Path, result: EvalResult, settings: Mapping[str, object], workers: int = 2,
                 pdf_dpi: float = DEFAULT_PDF_DPI) -> list[dict]:
    """Write errors.json, images/ and index.html into `folder`; returns the errors.json entries. PDF pages are
    rendered at `pdf_dpi`, the run's, so the boxes line up."""
    records = error_records(result.scored)
    images_dir, thumbs_dir = folder / "images", folder / "images" / "thumbs"
    try:
        thumbs_dir.mkdir(parents=True, exist_ok=True)
        entries = [r.to_json() for r in records]
        # one image per line: compact, and still diff- and grep-friendly
        text = "[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n" if entries else "[]\n"
        (folder / "errors.json").write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write the report into {folder}: {exc.strerror}. Choose another --report folder.") \
            from None
    by_key = {s.sample.key: s.sample.image for s in result.scored}
    names = _file_names(records)
    jobs = [(r, by_key[r.image], images_dir / name, thumbs_dir / name, pdf_dpi) for r, name in zip(records, names)]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        notes = list(pool.map(lambda job: _draw_files(*job), jobs))
    page = _page(records, names, notes, result, settings)
    (folder / "index.html").write_text(page, encoding="utf-8")
    return entries


def _file_names(records: Sequence[ImageErrors]) -> list[str]:
    """Rank-prefixed, filesystem-safe names, so the folder listing is in the page's order too."""
    width = max(4, len(str(len(records))))
    out = []
    for rank, record in enumerate(records, 1):
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(record.image)[0]).strip("._")[-80:] or "image"
        out.append(f"{rank:0{width}d}_{stem}.jpg")
    return out


def _canvas(path: Path, record: ImageErrors, pdf_dpi: float) -> tuple[np.ndarray, str]:
    """The image, or a grey canvas big enough for its polygons when it cannot be read."""
    try:
        return read_image(str(path), pdf_dpi), ""
    except ImageReadError:
        polys = record.matched + record.false_positives + record.missed + record.dont_care
        far = np.max([np.asarray(p).max(axis=0) for p in polys], axis=0) if polys else np.array([64, 64])
        w, h = int(far[0]) + 16, int(far[1]) + 16
        return np.full((h, w, 3), 235, np.uint8), "image not found: drawn on a blank canvas"


def _dashed(canvas: np.ndarray, poly, color, thickness: int) -> None:
    pts = np.asarray(poly, np.float64).reshape(-1, 2)
    for a, b in zip(pts, np.roll(pts, -1, axis=0)):
        length = float(np.hypot(*(b - a)))
        steps = max(1, int(length // DASH))
        for k in range(0, steps, 2):
            p = a + (b - a) * (k / steps)
            q = a + (b - a) * (min(k + 1, steps) / steps)
            cv2.line(canvas, tuple(int(round(v)) for v in p), tuple(int(round(v)) for v in q), color, thickness)


def draw(image: np.ndarray, record: ImageErrors) -> np.ndarray:
    """Matched detections green, false positives red, missed GT blue, do-not-care regions dashed grey; the tiles of a
    tiled image as dashed yellow rectangles."""
    canvas = image.copy()
    thickness = max(2, round(max(canvas.shape[:2]) / 500))
    for x0, y0, x1, y1 in record.tiles:
        _dashed(canvas, [(x0, y0), (x1 - 1, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], TILE_BGR, max(1, thickness - 1))
    for poly in record.dont_care:
        _dashed(canvas, poly, DONT_CARE_BGR, max(1, thickness - 1))
    for polys, color in ((record.missed, MISSED_BGR), (record.matched, MATCHED_BGR),
                         (record.false_positives, FALSE_POSITIVE_BGR)):
        shapes = [np.round(np.asarray(p, np.float64)).astype(np.int32).reshape(-1, 1, 2) for p in polys]
        if shapes:
            cv2.polylines(canvas, shapes, isClosed=True, color=color, thickness=thickness)
    return canvas


def _draw_files(record: ImageErrors, source: Path, full: Path, thumb: Path, pdf_dpi: float) -> str:
    image, note = _canvas(source, record, pdf_dpi)
    drawn = draw(image, record)
    h, w = drawn.shape[:2]
    small = cv2.resize(drawn, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA) \
        if w > THUMB_WIDTH else drawn
    for path, picture, quality in ((full, drawn, 90), (thumb, small, 80)):
        ok, buf = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            return "could not encode the drawing"
        buf.tofile(str(path))
    return note


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 8px}
table.sum{border-collapse:collapse;margin:8px 0}
table.sum td,table.sum th{border:1px solid #ccc;padding:3px 8px;text-align:right}
table.sum th{background:#eee}
.legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:14px;height:10px;border:2px solid;vertical-align:middle;margin-right:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:10px;margin-top:12px}
.card{background:#fff;border:1px solid #ddd;padding:5px}
.card img{width:320px;max-width:100%;display:block}
.name{font-family:monospace;font-size:12px;word-break:break-all}
.n{font-variant-numeric:tabular-nums}.fp{color:#d00}.fn{color:#0050e0}.ok{color:#080}.note{color:#a60}
"""


def _page(records: Sequence[ImageErrors], names: Sequence[str], notes: Sequence[str], result: EvalResult,
          settings: Mapping[str, object]) -> str:
    tp, fp, fn = (sum(getattr(r, k) for r in records) for k in ("tp", "fp", "fn"))
    esc = html.escape
    setting_rows = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in settings.items())
    cards = []
    for rank, (record, name, note) in enumerate(zip(records, names, notes), 1):
        href = "images/" + quote(name)
        cards.append(
            f'<div class="card"><a href="{href}"><img loading="lazy" src="images/thumbs/{quote(name)}" '
            f'alt="{esc(record.image)}"></a><div class="name">#{rank} {esc(record.image)}</div>'
            f'<div class="n"><span class="ok">tp {record.tp}</span> · <span class="fp">fp {record.fp}</span> · '
            f'<span class="fn">fn {record.fn}</span> · ignored {record.ignored}'
            + (f' <span class="note">({esc(note)})</span>' if note else "") + "</div></div>")
    legend = "".join(f'<span><i class="sw" style="border-color:rgb{_rgb(c)}{dash}"></i>{label}</span>'
                     for c, label, dash in ((MATCHED_BGR, "matched detection", ""),
                                            (FALSE_POSITIVE_BGR, "false positive", ""),
                                            (MISSED_BGR, "missed ground truth", ""),
                                            (DONT_CARE_BGR, "do-not-care region", ";border-style:dashed")))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>openocr-det eval report</title>"
        f"<style>{_STYLE}</style></head><body>\n<h1>openocr-det eval report</h1>\n"
        '<table class="sum"><tr><th>precision</th><th>recall</th><th>hmean</th><th>images</th><th>tp</th>'
        f"<th>fp</th><th>fn</th></tr><tr><td>{result.precision:.4f}</td><td>{result.recall:.4f}</td>"
        f"<td>{result.hmean:.4f}</td><td>{len(records)}</td><td>{tp}</td><td>{fp}</td><td>{fn}</td></tr></table>\n"
        f'<table class="sum">{setting_rows}</table>\n<p class="legend">{legend}</p>\n'
        "<p>Worst first (false positives + misses). Click a thumbnail for the full-size drawing; "
        "errors.json lists every false positive and missed region.</p>\n"
        f'<div class="grid">\n' + "\n".join(cards) + "\n</div></body></html>\n")


def _rgb(bgr: tuple[int, int, int]) -> str:
    return f"({bgr[2]},{bgr[1]},{bgr[0]})"
