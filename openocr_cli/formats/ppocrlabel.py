"""PPOCRLabel's image folder: `Label.txt` and `fileState.txt` inside the folder of images it opens.

PPOCRLabel keys an image by `<folder name>/<file name>` (its Label.txt lines read
`folder/img.jpg<TAB>[{"transcription": ..., "points": [[x, y], ...], "difficult": false}]`, the JSON with
`"difficult"` on every box), so paths are relative to the folder's parent. `fileState.txt` lists the images a
person has checked (`/absolute/path/img.jpg<TAB>1`); PPOCRLabel takes every image listed there as checked
whatever the number after the TAB, so images still to review are simply not listed, and it saves Label.txt
with the checked images only. `difficult: true` is a do-not-care region.

Writing makes one such folder per image folder, `OUT/<folder>/`, with Label.txt, an empty fileState.txt (every
image unchecked, so PPOCRLabel opens them for review) and the images themselves linked in (a symbolic link,
else a hard link, else a copy), so `File > Open Dir` on it works without touching the originals. Reading takes
such a folder (or its Label.txt): an image listed as checked but absent from Label.txt is a background image.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Optional

from openocr_cli.formats import ppocr
from openocr_cli.formats.label_model import Dataset, Format, ImageLabels, Problem, Region, WriteOptions, decode_lines

LABEL_NAME = "Label.txt"
STATE_NAME = "fileState.txt"


def key(folder: str, name: str) -> str:
    return f"{folder}/{name}"


def label_line(image_key: str, regions: Sequence[Region]) -> str:
    boxes = [{"transcription": r.label, "points": r.points, "difficult": bool(r.ignore)} for r in regions]
    return f"{image_key}\t{json.dumps(boxes, ensure_ascii=False)}\n"


def link_image(source: Path, target: Path) -> None:
    """Put the image into the review folder without copying when the file system allows it."""
    if target.exists() or target.is_symlink():
        return
    try:
        os.symlink(os.path.abspath(source), target)
        return
    except OSError:
        pass
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def check(image: ImageLabels, options: WriteOptions) -> list[str]:
    path = PurePosixPath(image.image)
    reasons = []
    if len(path.parts) < 2 or ".." in path.parts or path.is_absolute():
        reasons.append(f"PPOCRLabel names images folder/file, and {image.image} has no folder inside the output "
                       "(pass --image-prefix NAME to put the images in a folder NAME)")
    if any(c in image.image for c in "\t\r\n"):
        reasons.append("the image path contains a TAB or line break")
    return reasons


def write(images: list[ImageLabels], target: Path, options: WriteOptions) -> None:
    target.mkdir()
    folders: dict[PurePosixPath, list[ImageLabels]] = {}
    for image in images:
        folders.setdefault(PurePosixPath(image.image).parent, []).append(image)
    for folder, members in folders.items():
        out = target / folder
        out.mkdir(parents=True, exist_ok=True)
        with open(out / LABEL_NAME, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(label_line(key(folder.name, PurePosixPath(im.image).name), im.regions) for im in members)
        (out / STATE_NAME).write_text("", encoding="utf-8")
        if options.image_root is not None:
            for image in members:
                source = options.image_root / image.image
                if source.is_file():
                    link_image(source, out / PurePosixPath(image.image).name)


def read(source: Path, images_dir: Optional[Path]) -> Dataset:
    folder = source if source.is_dir() else source.parent
    label_file = folder / LABEL_NAME if source.is_dir() else source
    if not label_file.is_file():
        return Dataset([], folder.parent, [Problem(str(folder), f"no {LABEL_NAME} in this PPOCRLabel folder")])
    dataset = Dataset([], images_dir or folder.parent)
    for number, raw in enumerate(decode_lines(label_file), 1):
        if not raw.strip():
            continue
        where = f"{label_file}:{number}"
        try:
            image = ppocr.parse_line(raw, where)
            boxes = json.loads(raw.split("\t", 1)[1])
            for region, box in zip(image.regions, boxes):
                if box.get("difficult") is True:
                    region.ignore = True
            dataset.images.append(image)
        except ValueError as exc:
            dataset.problems.append(Problem(where, str(exc)))
    listed = {im.image for im in dataset.images}
    state_file = folder / STATE_NAME
    if state_file.is_file():
        for number, raw in enumerate(decode_lines(state_file), 1):
            path = raw.split("\t", 1)[0].strip()
            if not path:
                continue
            name = key(folder.name, Path(path.replace("\\", "/")).name)
            if name not in listed:  # checked, and saved without boxes: an image without text
                dataset.images.append(ImageLabels(name, source=f"{state_file}:{number}"))
                listed.add(name)
    return dataset


FORMAT = Format("ppocrlabel", "PPOCRLabel image folder: Label.txt (folder/img.jpg<TAB>JSON) + fileState.txt", read,
                source_is_dir=True, write=write, output_is_dir=True, entry=lambda image: image, check=check)
