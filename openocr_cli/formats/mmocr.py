"""MMOCR 1.x text detection annotations: one JSON with `metainfo` and `data_list`.

Each `data_list` entry is an image (`img_path`, `height`, `width`) with `instances`: `polygon` a flat
[x1, y1, x2, y2, ...] list (else `bbox` [x1, y1, x2, y2] as a rectangle), `ignore` the do-not-care flag,
`text` the transcription when the file has one (text spotting files do; detection files do not).
Written files are MMOCR's textdet layout with one category, `text`, and each region's transcription.
"""

from __future__ import annotations

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
    is_ignore_text,
    load_json,
    not_this_format,
    pair_up,
    positive_int,
)

METAINFO = {"dataset_type": "TextDetDataset", "task_name": "textdet", "category": [{"id": 0, "name": "text"}]}


def read(source: Path, images_dir: Optional[Path]) -> Dataset:
    dataset = Dataset([], images_dir or source.parent)
    try:
        data = load_json(source)
    except BadFile as exc:
        dataset.problems.append(exc.problem)
        return dataset
    if not isinstance(data, dict) or not isinstance(data.get("data_list"), list):
        dataset.problems.append(not_this_format(str(source), data, "mmocr", "an MMOCR file (no \"data_list\" list)"))
        return dataset
    for n, entry in enumerate(data["data_list"]):
        where = f"{source}: data_list[{n}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("img_path"), str) or not entry["img_path"]:
            dataset.problems.append(Problem(where, "an entry needs an \"img_path\""))
            continue
        image = ImageLabels(entry["img_path"].replace("\\", "/"), width=positive_int(entry.get("width")),
                            height=positive_int(entry.get("height")), source=where)
        instances = entry.get("instances") or []
        if not isinstance(instances, list):
            dataset.problems.append(Problem(where, "\"instances\" must be a list"))
            continue
        for k, instance in enumerate(instances):
            try:
                image.regions.append(_region(instance))
            except ValueError as exc:
                dataset.problems.append(Problem(f"{where}.instances[{k}]", str(exc)))
        dataset.images.append(image)
    return dataset


def _region(instance: object) -> Region:
    if not isinstance(instance, dict):
        raise ValueError("an instance must be a JSON object")
    text = instance.get("text")
    text = "" if text is None else str(text)
    ignore = instance.get("ignore")
    if ignore is not None and not isinstance(ignore, bool):
        raise ValueError(f"\"ignore\" must be true or false, not {ignore!r}")
    return Region(_points(instance), text, bool(ignore) or is_ignore_text(text))


def _points(instance: dict) -> list[list[Number]]:
    flat = instance.get("polygon")
    if flat:
        if not isinstance(flat, list) or len(flat) % 2:
            raise ValueError("\"polygon\" must be a flat [x1, y1, x2, y2, ...] list with an even count")
        return pair_up(flat[0::2], flat[1::2])
    box = instance.get("bbox")
    if not isinstance(box, list) or len(box) != 4:
        raise ValueError("no \"polygon\" and no [x1, y1, x2, y2] \"bbox\"")
    (x1, y1), (x2, y2) = as_points([box[:2], box[2:]], minimum=2)
    return [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]


def _instance(region: Region) -> dict:
    xs, ys = [p[0] for p in region.points], [p[1] for p in region.points]
    return {"polygon": [v for p in region.points for v in p], "bbox": [min(xs), min(ys), max(xs), max(ys)],
            "bbox_label": 0, "ignore": region.ignore, "text": region.text}


def write(images: list[ImageLabels], target: Path, options: WriteOptions) -> None:
    data_list = []
    for image in images:
        entry: dict = {"img_path": image.image}
        if image.width and image.height:
            entry.update(height=image.height, width=image.width)
        entry["instances"] = [_instance(r) for r in image.regions]
        data_list.append(entry)
    data = {"metainfo": METAINFO, "data_list": data_list}
    target.write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")


FORMAT = Format("mmocr", "MMOCR 1.x textdet JSON (metainfo, data_list[].instances[].polygon)", read,
                source_is_dir=False, write=write, needs_size=True)
