"""COCO instances JSON with polygon segmentations; one image entry per image, every annotation a text region.

The transcription is `attributes.transcription`, else `text`, else empty; `iscrowd: 1` or
`attributes.legible: false` marks a do-not-care region. An annotation without a polygon falls back to its
bbox. Written files use one category (`text`) and put transcription and legibility in `attributes`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from shapely.geometry import Polygon

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
    is_ignore_text,
    load_json,
    not_this_format,
    pair_up,
    positive_int,
)

CATEGORY = {"id": 1, "name": "text"}


def read(source: Path, images_dir: Optional[Path]) -> Dataset:
    dataset = Dataset([], images_dir or source.parent)
    try:
        data = load_json(source)
    except BadFile as exc:
        dataset.problems.append(exc.problem)
        return dataset
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        expected = "a COCO instances file (no \"images\" list)"
        dataset.problems.append(not_this_format(str(source), data, "coco", expected))
        return dataset
    by_id: dict[object, ImageLabels] = {}
    for n, entry in enumerate(data["images"]):
        where = f"{source}: images[{n}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str) or "id" not in entry:
            dataset.problems.append(Problem(where, "an image needs an \"id\" and a \"file_name\""))
        elif entry["id"] in by_id:
            dataset.problems.append(Problem(where, f"image id {entry['id']!r} is used twice"))
        else:
            image = ImageLabels(entry["file_name"].replace("\\", "/"), width=positive_int(entry.get("width")),
                                height=positive_int(entry.get("height")), source=where)
            by_id[entry["id"]] = image
            dataset.images.append(image)
    for n, annotation in enumerate(data.get("annotations") or []):
        try:
            image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
            image = by_id.get(image_id) if isinstance(image_id, (int, str)) else None
            if image is None:
                raise ValueError("an annotation needs the \"image_id\" of an entry in \"images\"")
            image.regions.extend(_regions(annotation))
        except ValueError as exc:
            dataset.problems.append(Problem(f"{source}: annotations[{n}]", str(exc)))
    return dataset


def _regions(annotation: dict) -> list[Region]:
    attributes = annotation.get("attributes") if isinstance(annotation.get("attributes"), dict) else {}
    text = attributes.get("transcription", annotation.get("text"))
    text = "" if text is None else str(text)
    ignore = annotation.get("iscrowd") == 1 or attributes.get("legible") is False or is_ignore_text(text)
    return [Region(points, text, ignore) for points in _polygons(annotation)]


def _polygons(annotation: dict) -> list[list[list[Number]]]:
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, dict):
        raise ValueError("RLE mask segmentations are not supported; text regions must be polygons")
    if segmentation:
        if not isinstance(segmentation, list) or not all(isinstance(s, list) for s in segmentation):
            raise ValueError("\"segmentation\" must be a list of flat [x1, y1, x2, y2, ...] polygons")
        polygons = []
        for flat in segmentation:
            if len(flat) % 2:
                raise ValueError(f"a polygon has an odd number of coordinates ({len(flat)})")
            polygons.append(pair_up(flat[0::2], flat[1::2]))
        return polygons
    bbox = annotation.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise ValueError("no polygon \"segmentation\" and no [x, y, width, height] \"bbox\"")
    (x, y), (w, h) = as_points([bbox[:2], bbox[2:]], minimum=2)
    return [[[x, y], [x + w, y], [x + w, y + h], [x, y + h]]]


def _annotation(region: Region, image_id: int, annotation_id: int) -> dict:
    xs, ys = [p[0] for p in region.points], [p[1] for p in region.points]
    return {"id": annotation_id, "image_id": image_id, "category_id": CATEGORY["id"],
            "segmentation": [[v for p in region.points for v in p]],
            "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
            "area": float(Polygon(region.points).area), "iscrowd": int(region.ignore),
            "attributes": {"transcription": region.text, "legible": not region.ignore}}


def write(images: list[ImageLabels], target: Path, options: WriteOptions) -> None:
    entries, annotations = [], []
    for image_id, image in enumerate(images, 1):
        entry = {"id": image_id, "file_name": image.image}
        if image.width and image.height:
            entry.update(width=image.width, height=image.height)
        entries.append(entry)
        for region in image.regions:
            annotations.append(_annotation(region, image_id, len(annotations) + 1))
    data = {"images": entries, "annotations": annotations, "categories": [CATEGORY]}
    target.write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")


FORMAT = Format("coco", "COCO instances JSON with polygon segmentations", read, source_is_dir=False,
                write=write, needs_size=True)
