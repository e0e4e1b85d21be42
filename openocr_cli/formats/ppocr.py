"""PaddleOCR / OpenOCR label files (and PPOCRLabel's Label.txt): `image<TAB>[{"transcription", "points"}]`.

Lines are validated by the same parser train and eval use (identical messages), but the points are kept
as the JSON numbers they were, so ints stay ints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from openocr_cli.data.labels import parse_regions, resolve_image_field, split_line
from openocr_cli.formats import det_results
from openocr_cli.formats.label_model import Dataset, Format, ImageLabels, Problem, Region, WriteOptions, is_ignore_text

ROOT_PROBE = 20


def read(source: Path, images_dir: Optional[Path]) -> Dataset:
    """A label file, det_results.txt, or predict's det_results.jsonl (told apart by its first line)."""
    dataset = Dataset([], Path("."))
    jsonl = None
    with open(source, "rb") as f:
        for number, raw_bytes in enumerate(f, 1):
            where = f"{source}:{number}"
            try:
                raw = raw_bytes.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\n").rstrip("\r")
                if raw.strip():
                    jsonl = det_results.is_jsonl(raw) if jsonl is None else jsonl
                    dataset.images.append(parse_jsonl_line(raw, where) if jsonl else parse_line(raw, where))
            except UnicodeDecodeError as exc:
                dataset.problems.append(Problem(where, f"not UTF-8 text (byte {exc.start})"))
            except ValueError as exc:
                dataset.problems.append(Problem(where, str(exc)))
    dataset.root = images_dir or _image_root(source, dataset.images)
    return dataset


def parse_line(raw: str, where: str) -> ImageLabels:
    image_field, annotation = split_line(raw)
    if raw.count("\t") > 1 or any(ord(c) < 32 for c in image_field):  # a name holding a TAB or CR forges records
        raise ValueError("more than one TAB, or a control character in the image path: an image name with a TAB "
                         "or line break cannot be told from the record; fix the line")
    key, _ = resolve_image_field(image_field, Path("."))
    parse_regions(annotation)  # validation only: it converts the points to float32
    regions = []
    for region in json.loads(annotation):
        text = region.get("transcription", "")
        text = "" if text is None else str(text)
        score = region.get("score")  # det_results.txt (predictions) carries one
        score = float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None
        regions.append(Region([list(p) for p in region["points"]], text, is_ignore_text(text), score))
    return ImageLabels(key, regions, source=where)


def parse_jsonl_line(raw: str, where: str) -> ImageLabels:
    """One det_results.jsonl record: its boxes with their scores (no transcription), and the size it states."""
    record = det_results.jsonl_record(raw)
    if record.get("error") is not None:
        raise ValueError(f"predict could not read this image ({record['error']}), so it has no boxes to convert")
    regions = []
    for n, box in enumerate(record["detections"], 1):
        det_results.box_polygon(box, n)  # validation only
        score = box.get("score")
        regions.append(Region([list(p) for p in box["points"]], "", False, None if score is None else float(score)))
    sizes = [record.get(k) if isinstance(record.get(k), int) and record.get(k) > 0 else None
             for k in ("width", "height")]
    return ImageLabels(record["image"], regions, *sizes, source=where)


def _image_root(source: Path, images: list[ImageLabels]) -> Path:
    """Paths are relative to the label file's folder, or to its parent for PPOCRLabel (`folder/img.jpg`)."""
    folder = source.parent
    probe = [image.image for image in images[:ROOT_PROBE]]
    for root in (folder, folder.parent):
        if any((root / name).is_file() for name in probe):
            return root
    return folder


def format_line(image: ImageLabels) -> str:
    regions = [{"transcription": r.label, "points": r.points} for r in image.regions]
    return f"{image.image}\t{json.dumps(regions, ensure_ascii=False)}\n"


def write(images: list[ImageLabels], target: Path, options: WriteOptions) -> None:
    with open(target, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(format_line(image) for image in images)


def check(image: ImageLabels, options: WriteOptions) -> list[str]:
    return ["the image path contains a TAB or line break"] if any(c in image.image for c in "\t\r\n") else []


FORMAT = Format("ppocr", "PaddleOCR label file: image<TAB>JSON list (also PPOCRLabel's Label.txt, and predict's "
                "det_results.txt and .jsonl)", read,
                source_is_dir=False, write=write, check=check)
