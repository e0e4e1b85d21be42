"""Label Studio tasks JSON: a list of tasks `{"data": {"image": ...}, "predictions" | "annotations": [...]}`.

Regions are `polygonlabels` results whose points are percentages of the image size (`original_width`,
`original_height` give the pixels back), labelled `Text` (`###` or `Ignore`: do not care). The tasks match
this labelling config (docs/guides/pre-annotation.md, "Label Studio"):

    <View>
      <Image name="image" value="$image"/>
      <PolygonLabels name="label" toName="image"><Label value="Text"/><Label value="###"/></PolygonLabels>
      <TextArea name="transcription" toName="image" perRegion="true" editable="true"/>
    </View>

Reading takes an import file or a Label Studio JSON export: a task's first annotation with results (a human's
work) wins over its predictions; `rectanglelabels` (with their rotation) count as regions too, and a per-region
`textarea` result (same id) is the transcription. Image paths come back from `data.image` with Label Studio's
local-files prefix (`/data/local-files/?d=`) removed. Writing puts detector regions (with scores) in
`predictions` and labelled regions in `annotations`.
"""

from __future__ import annotations

import json
import math
import posixpath
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Optional
from urllib.parse import unquote

from openocr_cli.formats.label_model import (
    BadFile,
    Dataset,
    Format,
    ImageLabels,
    Number,
    Problem,
    Region,
    WriteOptions,
    json_shape,
    load_json,
    not_this_format,
    positive_int,
)

FROM_NAME = "label"
TO_NAME = "image"
TEXT_FROM_NAME = "transcription"
TEXT_LABEL = "Text"
IGNORE_LABELS = ("###", "Ignore", "ignore")
LOCAL_FILES = "/data/local-files/?d="
DECIMALS = 6
LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <PolygonLabels name="label" toName="image"><Label value="Text"/><Label value="###"/></PolygonLabels>
  <TextArea name="transcription" toName="image" perRegion="true" editable="true"/>
</View>
"""


def percent(value: Number, size: int) -> float:
    return round(float(value) * 100.0 / size, DECIMALS)


def pixels(value: Number, size: int) -> Number:
    """A percentage back to pixels; an integer when it is one (the round trip of integer corners is exact)."""
    px = float(value) * size / 100.0
    return int(round(px)) if abs(px - round(px)) < 1e-3 else px


def region_results(regions: Sequence[Region], width: int, height: int, prefix: str) -> list[dict]:
    """Label Studio results for regions in pixels: one polygon each, plus its transcription when it has one."""
    out = []
    for n, region in enumerate(regions):
        rid = f"{prefix}{n}"
        result: dict[str, Any] = {
            "id": rid, "from_name": FROM_NAME, "to_name": TO_NAME, "type": "polygonlabels",
            "original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"points": [[percent(x, width), percent(y, height)] for x, y in region.points],
                      "closed": True, "polygonlabels": ["###" if region.ignore else TEXT_LABEL]}}
        if region.score is not None:
            result["score"] = round(float(region.score), DECIMALS)
        out.append(result)
        if region.text and not region.ignore:
            out.append({"id": rid, "from_name": TEXT_FROM_NAME, "to_name": TO_NAME, "type": "textarea",
                        "original_width": width, "original_height": height, "image_rotation": 0,
                        "value": {"points": result["value"]["points"], "text": [region.text]}})
    return out


def task(image: str, regions: Sequence[Region], width: int, height: int, model_version: str = "") -> dict:
    """One task: predictions when the regions carry detector scores, else annotations (labelled data)."""
    results = region_results(regions, width, height, "r")
    scores = [r.score for r in regions if r.score is not None]
    if regions and len(scores) == len(regions) or (not regions and model_version):
        entry: dict[str, Any] = {"model_version": model_version or "openocr-det",
                                 "score": round(sum(scores) / len(scores), DECIMALS) if scores else 0.0,
                                 "result": results}
        return {"data": {"image": image}, "predictions": [entry]}
    return {"data": {"image": image}, "annotations": [{"result": results}]}


def check(image: ImageLabels, options: WriteOptions) -> list[str]:
    if not (image.width and image.height):
        return ["its size is unknown, and Label Studio points are percentages of it (pass the image folder "
                "with --images-dir)"]
    return []


def write(images: list[ImageLabels], target: Path, options: WriteOptions) -> None:
    tasks = [task(im.image, im.regions, im.width, im.height) for im in images]  # type: ignore[arg-type]
    target.write_text(json.dumps(tasks, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def image_path(value: str) -> str:
    """data.image -> the image path: Label Studio's local-files URL gives its `d` parameter back."""
    if value.startswith(LOCAL_FILES):
        return posixpath.normpath(unquote(value[len(LOCAL_FILES):]).replace("\\", "/"))
    return value.replace("\\", "/")


def read(source: Path, images_dir: Optional[Path]) -> Dataset:
    dataset = Dataset([], images_dir or source.parent)
    try:
        data = load_json(source)
    except BadFile as exc:
        dataset.problems.append(exc.problem)
        return dataset
    if isinstance(data, dict) and json_shape(data) is None:
        data = [data]  # one task
    if not isinstance(data, list):
        dataset.problems.append(not_this_format(str(source), data, "labelstudio",
                                                "Label Studio tasks (a JSON list of {\"data\": ...})"))
        return dataset
    for n, item in enumerate(data):
        where = f"{source}: [{n}]"
        try:
            dataset.images.append(_image(item, where, dataset.problems))
        except ValueError as exc:
            dataset.problems.append(Problem(where, str(exc)))
    return dataset


def _image(item: object, where: str, problems: list[Problem]) -> ImageLabels:
    if not isinstance(item, dict) or not isinstance(item.get("data"), dict):
        raise ValueError("a task must be an object with a \"data\" object")
    value = item["data"].get("image")
    if not isinstance(value, str) or not value.strip():
        raise ValueError("data.image is missing; it names the task's image")
    image = ImageLabels(image_path(value), source=where)
    key, results = _results(item)
    texts = {r.get("id"): r for r in results if isinstance(r, dict) and r.get("type") == "textarea"}
    for n, result in enumerate(results):
        if not isinstance(result, dict) or result.get("type") == "textarea":
            continue
        try:
            region = _region(result, texts)
        except ValueError as exc:
            problems.append(Problem(f"{where}.{key}.result[{n}]", str(exc)))
            continue
        if region is not None:
            image.regions.append(region)
            image.width = image.width or positive_int(result.get("original_width"))
            image.height = image.height or positive_int(result.get("original_height"))
    return image


def _results(item: dict) -> tuple[str, list]:
    """The results to read: the first annotation that is not cancelled and has any, else the first prediction."""
    for key in ("annotations", "completions", "predictions"):
        for n, entry in enumerate(item.get(key) or []):
            if isinstance(entry, dict) and not entry.get("was_cancelled") and isinstance(entry.get("result"), list) \
                    and entry["result"]:
                return f"{key}[{n}]", entry["result"]
    return "annotations", []


def _region(result: dict, texts: dict) -> Optional[Region]:
    kind = result.get("type")
    value = result.get("value")
    if kind not in ("polygonlabels", "polygon", "rectanglelabels", "rectangle"):
        return None  # other controls (choices, ratings) say nothing about regions
    if not isinstance(value, dict):
        raise ValueError("a region result needs a \"value\" object")
    width, height = positive_int(result.get("original_width")), positive_int(result.get("original_height"))
    if not (width and height):
        raise ValueError("original_width / original_height are missing; the points are percentages of them")
    if kind.startswith("polygon"):
        pts = [[pixels(x, width), pixels(y, height)] for x, y in _polygon(value)]
    else:
        pts = _rectangle(value, width, height)
    labels = value.get("polygonlabels") or value.get("rectanglelabels") or []
    ignore = any(label in IGNORE_LABELS for label in labels)
    text = ""
    if result.get("id") in texts:
        found = (texts[result["id"]].get("value") or {}).get("text") or [""]
        text = str(found[0]) if isinstance(found, list) and found else str(found)
    score = result.get("score")
    score = float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None
    return Region(pts, "###" if ignore else text, ignore, score)


def _finite(values: Iterable[object]) -> list[float]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"coordinate {v!r} is not a finite number")
        out.append(float(v))
    return out


def _polygon(value: dict) -> list[list[float]]:
    points = value.get("points")
    if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
        raise ValueError("value.points must be a list of [x%, y%] pairs")
    if len(points) < 3:
        raise ValueError(f"a polygon needs at least 3 points, got {len(points)}")
    return [_finite(p) for p in points]


def _rectangle(value: dict, width: int, height: int) -> list[list[Number]]:
    """Label Studio's rectangle: top-left x, y, width, height in percent, turned by `rotation` degrees
    (clockwise on screen) about its top-left corner, in pixels."""
    x, w = (pixels(v, width) for v in _finite([value.get("x"), value.get("width")]))
    y, h = (pixels(v, height) for v in _finite([value.get("y"), value.get("height")]))
    angle = math.radians(float(value.get("rotation") or 0.0))
    if angle == 0.0:
        return [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]
    cos, sin = math.cos(angle), math.sin(angle)
    corners = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)]
    return [[round(x + dx * cos - dy * sin, 2), round(y + dx * sin + dy * cos, 2)] for dx, dy in corners]


FORMAT = Format("labelstudio", "Label Studio tasks JSON (polygonlabels in percent; predictions or annotations)",
                read, source_is_dir=False, write=write, check=check, needs_size=True)
