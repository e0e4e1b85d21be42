"""labelme: one JSON per image; `polygon` and `rectangle` shapes are text regions, `label` their transcription.

`imagePath` is relative to the JSON file. Written files sit where the image would be (OUT/<image path>.json)
with `imageData: null`, so labelme opens them next to the images.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Optional

from openocr_cli.formats.label_model import (
    BadFile,
    Dataset,
    Format,
    ImageLabels,
    Problem,
    Region,
    WriteOptions,
    as_points,
    is_ignore_text,
    load_json,
    not_this_format,
    positive_int,
)

LABELME_VERSION = "5.4.1"
TEXT_SHAPES = ("polygon", "rectangle")


def read(source: Path, images_dir: Optional[Path]) -> Dataset:
    root = source if source.is_dir() else source.parent
    files = sorted(root.rglob("*.json")) if source.is_dir() else [source]
    dataset = Dataset([], root)
    for file in files:
        try:
            data = load_json(file)
        except BadFile as exc:
            dataset.problems.append(exc.problem)
            continue
        image = _image(data, file, root, dataset.problems)
        if image is not None:
            dataset.images.append(image)
    return dataset


def _image(data: object, file: Path, root: Path, problems: list[Problem]) -> Optional[ImageLabels]:
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        problems.append(not_this_format(str(file), data, "labelme", "a labelme file (no \"shapes\" list)"))
        return None
    path = data.get("imagePath")
    if not isinstance(path, str) or not path.strip():
        problems.append(Problem(f"{file}: imagePath", "missing; it names the image relative to the JSON file"))
        return None
    location = os.path.normpath(os.path.join(os.path.relpath(file.parent, root), path.replace("\\", "/")))
    image = ImageLabels(location.replace(os.sep, "/"), source=str(file),
                        width=positive_int(data.get("imageWidth")), height=positive_int(data.get("imageHeight")))
    for n, shape in enumerate(data["shapes"]):
        try:
            image.regions.append(_region(shape))
        except ValueError as exc:
            problems.append(Problem(f"{file}: shapes[{n}]", str(exc)))
    return image


def _region(shape: object) -> Region:
    if not isinstance(shape, dict):
        raise ValueError("a shape must be a JSON object")
    kind = shape.get("shape_type") or "polygon"
    if kind not in TEXT_SHAPES:
        raise ValueError(f"shape_type {kind!r} is not a text region (only {' and '.join(TEXT_SHAPES)} are)")
    text = shape.get("label")
    text = "" if text is None else str(text)
    points = shape.get("points")
    if kind == "rectangle":
        if not isinstance(points, list) or len(points) != 2:
            raise ValueError("a rectangle needs exactly 2 corner points")
        (x1, y1), (x2, y2) = as_points(points, minimum=2)
        left, right, top, bottom = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
        points = [[left, top], [right, top], [right, bottom], [left, bottom]]
    return Region(as_points(points), text, is_ignore_text(text))


def entry(image: str) -> str:
    return str(PurePosixPath(image).with_suffix(".json"))


def write(images: list[ImageLabels], target: Path, options: WriteOptions) -> None:
    target.mkdir()
    for image in images:
        shapes = [{"label": r.label, "points": r.points, "group_id": None, "description": "",
                   "shape_type": "polygon", "flags": {}} for r in image.regions]
        data = {"version": LABELME_VERSION, "flags": {}, "shapes": shapes,
                "imagePath": PurePosixPath(image.image).name, "imageData": None,
                "imageHeight": image.height, "imageWidth": image.width}
        file = target / entry(image.image)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def check(image: ImageLabels, options: WriteOptions) -> list[str]:
    path = PurePosixPath(image.image)
    if ".." in path.parts or path.is_absolute():
        return [f"its JSON file would be written outside the output folder ({image.image})"]
    return []


FORMAT = Format("labelme", "folder of labelme JSON files (polygon and rectangle shapes)", read,
                source_is_dir=True, write=write, output_is_dir=True, entry=entry, check=check, needs_size=True)
