"""Conversion between label formats: read everything, check everything, then write atomically.

Nothing is written while any entry is bad (unless --skip-bad): the output is built in a hidden temporary
folder next to OUT and renamed into place at the end, so an interrupted or refused run leaves no partial file.
"""

from __future__ import annotations

import posixpath
import random
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from openocr_cli.data.labels import MAX_REPORTED_PROBLEMS
from openocr_cli.errors import UserError
from openocr_cli.formats import get_format, ppocr, writable_names
from openocr_cli.formats.label_model import Format, ImageLabels, Problem, WriteOptions, image_size

SPLIT_NAMES = ("train_label.txt", "test_label.txt")


@dataclass(frozen=True)
class Request:
    source: Path
    source_format: str
    target_format: str
    output: Path
    images_dir: Optional[Path] = None
    image_prefix: str = ""
    split: Optional[float] = None
    seed: int = 0
    min_rect: bool = False
    skip_bad: bool = False
    overwrite: bool = False


@dataclass
class Summary:
    """What was written: the images (paths relative to root, before --image-prefix), the parts (name, path,
    images), the entries skipped, the images not found under root and those whose size stayed unknown."""

    images: list[ImageLabels]
    root: Path
    parts: list[tuple[str, Path, int]] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unknown_sizes: int = 0
    merged: int = 0

    @property
    def regions(self) -> int:
        return sum(len(image.regions) for image in self.images)

    @property
    def ignored(self) -> int:
        return sum(r.ignore for image in self.images for r in image.regions)

    @property
    def predicted(self) -> int:
        """Regions with a detector score: the source holds predictions (det_results.txt), not labels."""
        return sum(r.score is not None for image in self.images for r in image.regions)


def convert_labels(request: Request) -> Summary:
    source_format = get_format(request.source_format, "--from")
    target = get_format(request.target_format, "--to")
    _check_request(request, source_format, target)
    dataset = source_format.read(request.source, request.images_dir)
    summary = Summary([], dataset.root, skipped=list(dataset.problems))
    images = _merge_duplicates(dataset.images, summary)
    if target.needs_size or request.images_dir is not None:
        _locate(images, dataset.root, target.needs_size, summary)
    summary.images = _writable(images, target, request, summary.skipped)
    if summary.skipped and (not request.skip_bad or not summary.images):
        raise UserError(_problem_report(summary.skipped, request, read_any=bool(dataset.images)))
    if not summary.images:
        raise UserError(f"no images to write: {request.source} holds no {source_format.name} labels "
                        f"({source_format.summary}).")
    _write(request, target, summary)
    return summary


def _check_request(request: Request, source_format: Format, target: Format) -> None:
    if target.write is None:
        raise UserError(f"{target.name} can only be read; --to takes one of {', '.join(writable_names())}.",
                        exit_code=2)
    source = request.source
    if not source.exists():
        raise UserError(f"{source} does not exist; SOURCE is the label file or folder to convert.")
    if source.is_dir() and not source_format.source_is_dir:
        raise UserError(f"{source} is a folder, but --from {source_format.name} reads one file "
                        f"({source_format.summary}).", exit_code=2)
    if request.images_dir is not None and not request.images_dir.is_dir():
        raise UserError(f"--images-dir {request.images_dir} is not a folder.", exit_code=2)
    if request.split is not None:
        if target.name != ppocr.FORMAT.name:
            raise UserError(f"--split writes {' and '.join(SPLIT_NAMES)} and needs --to ppocr; convert to ppocr with "
                            f"--split, or convert without --split to {target.name}.", exit_code=2)
        if not 0 < request.split < 1:
            raise UserError(f"--split {request.split} must be between 0 and 1 (the train fraction, e.g. 0.9).",
                            exit_code=2)
    output = request.output.resolve()
    guarded = [source.resolve()] + ([request.images_dir.resolve()] if request.images_dir else [])
    if any(output == p or output in p.parents for p in guarded):
        raise UserError(f"--output {request.output} would replace the input it is converted from; choose another path.",
                        exit_code=2)
    if request.output.exists() and not request.overwrite:
        raise UserError(f"{request.output} already exists; pass --overwrite to replace it, or choose another --output.")


def _merge_duplicates(images: list[ImageLabels], summary: Summary) -> list[ImageLabels]:
    """An image listed more than once becomes one entry with all its regions (where it first appeared)."""
    first: dict[str, ImageLabels] = {}
    for image in images:
        if image.image in first:
            first[image.image].regions.extend(image.regions)
            summary.merged += 1
        else:
            first[image.image] = image
    return list(first.values())


def _locate(images: list[ImageLabels], root: Path, sizes: bool, summary: Summary) -> None:
    """Note images missing under the image root and fill in sizes the source did not state."""
    for image in images:
        path = root / image.image
        if not path.is_file():
            summary.missing.append(image.image)
        elif sizes and not (image.width and image.height):
            image.width, image.height = image_size(path) or (None, None)
        if sizes and not (image.width and image.height):
            summary.unknown_sizes += 1


def _prefixed(image: ImageLabels, prefix: str) -> ImageLabels:
    return replace(image, image=posixpath.join(prefix, image.image)) if prefix else image


def _writable(images: list[ImageLabels], target: Format, request: Request,
              problems: list[Problem]) -> list[ImageLabels]:
    """The images the target format can hold; the others become problems naming the image and why."""
    kept, entries = [], {}
    for image in images:
        written = _prefixed(image, request.image_prefix)
        reasons = target.check(written, WriteOptions(request.min_rect))
        entry = target.entry(written.image)
        if entry in entries:
            reasons.append(f"it would be written to {entry} like {entries[entry]} (two images, one {target.name} "
                           "entry)")
        if reasons:
            problems.extend(Problem(f"{image.source}: {image.image}", reason) for reason in reasons)
            continue
        entries[entry] = image.image
        kept.append(image)
    return kept


def _problem_report(problems: list[Problem], request: Request, read_any: bool = True) -> str:
    """Every bad entry (up to MAX_REPORTED_PROBLEMS), in plain text (the CLI shows `[u'c']` as written).
    --skip-bad is suggested only when there is something else to convert."""
    shown = "\n".join(f"  {p}" for p in problems[:MAX_REPORTED_PROBLEMS])
    more = len(problems) - MAX_REPORTED_PROBLEMS
    extra = f"\n  ... and {more} more" if more > 0 else ""
    hint = ("every image was skipped" if request.skip_bad else "pass --skip-bad to convert the rest" if read_any
            else "no entry of the file could be read")
    return (f"{len(problems)} bad entr{'y' if len(problems) == 1 else 'ies'} converting {request.source}:\n"
            f"{shown}{extra}\nNothing was written. Fix these entries ({hint}).")


def split_images(images: list[ImageLabels], ratio: float, seed: int) -> tuple[list[ImageLabels], list[ImageLabels]]:
    """Seeded shuffle, round(n * ratio) images to train; both parts keep the source order."""
    order = list(range(len(images)))
    random.Random(seed).shuffle(order)
    train = set(order[:round(len(images) * ratio)])
    return ([im for i, im in enumerate(images) if i in train], [im for i, im in enumerate(images) if i not in train])


def _write(request: Request, target: Format, summary: Summary) -> None:
    output = request.output
    options = WriteOptions(request.min_rect, image_root=summary.root if not request.image_prefix else None)
    images = [_prefixed(image, request.image_prefix) for image in summary.images]
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror}.") from None
    try:
        built = work / output.name
        if request.split is None:
            target.write(images, built, options)
            summary.parts = [(target.name, output, len(images))]
        else:
            built.mkdir()
            for name, part in zip(SPLIT_NAMES, split_images(images, request.split, request.seed)):
                target.write(part, built / name, options)
                summary.parts.append((name, output / name, len(part)))
        _move_into_place(built, output, work)
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror or exc}. Nothing was written.") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _move_into_place(built: Path, output: Path, work: Path) -> None:
    """Rename the finished output over OUT (an existing one is only removed once the new one is complete)."""
    if output.exists() or output.is_symlink():
        output.rename(work / "replaced")
    built.rename(output)
