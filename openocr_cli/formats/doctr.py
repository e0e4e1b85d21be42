"""docTR's text detection labels: one JSON object, image file name -> {img_dimensions, img_hash, polygons}.

`polygons` is a list of polygons in absolute pixels, each a list of [x, y] points (a [xmin, ymin, xmax,
ymax] box is read as its rectangle), or for multi-class sets an object of class name -> such a list
(every class is read as text). docTR's detection labels hold neither transcriptions nor a do-not-care
flag: an image with do-not-care regions cannot be written (they would become text). Written files give
`img_dimensions` as the image's spatial shape [height, width] and `img_hash` as the SHA-256 of the image
file when it is found.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from openocr_cli.formats.label_model import (
    BadFile,
    Dataset,
    Format,
    ImageLabels,
    Number,
    Problem,
    Region,
    WriteOptions,
    as_points,
    json_shape,
    load_json,
    not_this_format,
)


def read(source: Path, images_dir: Optional[Path]) -> Dataset:
    beside = source.parent / "images"  # docTR's layout: labels.json next to images/
    dataset = Dataset([], images_dir or (beside if beside.is_dir() else source.parent))
    try:
        data = load_json(source)
    except BadFile as exc:
        dataset.problems.append(exc.problem)
        return dataset
    if not isinstance(data, dict) or (data and json_shape(data) != "doctr"):
        dataset.problems.append(not_this_format(str(source), data, "doctr",
                                                "docTR detection labels ({image: {\"polygons\": [...]}})"))
        return dataset
    for name, entry in data.items():
        where = f"{source}: {name}"
        image = ImageLabels(name.replace("\\", "/"), source=where)
        for key, polygon in _polygons(entry["polygons"], where, dataset.problems):
            try:
                image.regions.append(Region(_points(polygon)))
            except ValueError as exc:
                dataset.problems.append(Problem(f"{where}: polygons{key}", str(exc)))
        dataset.images.append(image)
    return dataset


def _polygons(value: object, where: str, problems: list[Problem]) -> list[tuple[str, object]]:
    """(where in the entry, polygon) for a plain list or a {class: list} object."""
    groups = value.items() if isinstance(value, dict) else [("", value)]
    found = []
    for name, polygons in groups:
        label = f"[{json.dumps(name)}]" if name else ""
        if not isinstance(polygons, list):
            problems.append(Problem(f"{where}: polygons{label}", "must be a list of polygons"))
            continue
        found += [(f"{label}[{n}]", polygon) for n, polygon in enumerate(polygons)]
    return found


def _points(polygon: object) -> list[list[Number]]:
    if isinstance(polygon, list) and len(polygon) == 4 and not any(isinstance(v, list) for v in polygon):
        (x1, y1), (x2, y2) = as_points([polygon[:2], polygon[2:]], minimum=2)
        return [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]
    return as_points(polygon)


def _sha256(path: Path) -> Optional[str]:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def write(images: list[ImageLabels], target: Path, options: WriteOptions) -> None:
    data = {}
    for image in images:
        path = options.image_root / image.image if options.image_root is not None else None
        data[image.image] = {
            "img_dimensions": [image.height, image.width] if image.width and image.height else None,
            "img_hash": _sha256(path) if path is not None else None,
            "polygons": [r.points for r in image.regions]}
    target.write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")


def check(image: ImageLabels, options: WriteOptions) -> list[str]:
    ignored = sum(r.ignore for r in image.regions)
    if ignored:
        return [f"{ignored} do-not-care region(s): docTR's detection labels have no do-not-care flag, so they would "
                "be trained as text"]
    return []


FORMAT = Format("doctr", "docTR detection labels.json ({image: {img_dimensions, img_hash, polygons}})", read,
                source_is_dir=False, write=write, check=check, needs_size=True)
