"""Predictions as files a person corrects: `predict --save-format labelme|ppocrlabel|labelstudio|rrc`.

`Preannotator.add` takes one prediction result at a time (anything with `.source`, `.path`, `.polygons`,
`.scores`, `.src_hw`) and writes it at once, so memory stays flat however many images run; `close` finalises
what needs the whole run (PPOCRLabel's Label.txt, the Label Studio task list, the RRC zip), each built under a
temporary name and renamed into place, so an interrupted run leaves no half file under a final name. Layout
under OUTPUT:

    labelme/<folder>/<stem>.json        imagePath relative to the JSON file; open with labelme <folder> --output ...
    ppocrlabel/<folder>/Label.txt       + fileState.txt (empty: every image unchecked) and the images linked in
    labelstudio.json                    Label Studio tasks with predictions (labelstudio.LABEL_CONFIG)
    submit.zip                          res_<stem>.txt per image, for the ICDAR evaluation (rrc.py)

`<folder>` is the name of the image's folder (a second folder of the same name gets `_2`, ...). A PDF page has
no image file for labelme or PPOCRLabel to open; it goes to labelstudio and rrc only (as `<stem>_p<N>`).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Optional

from openocr_cli.data.pdf import split_page_ref
from openocr_cli.errors import UserError
from openocr_cli.fileio import atomic_write_text
from openocr_cli.formats import labelme, labelstudio, ppocrlabel, rrc
from openocr_cli.formats.label_model import Region
from openocr_cli.suggest import did_you_mean

SAVE_FORMATS = ("labelme", "ppocrlabel", "labelstudio", "rrc")
LABELME_DIR = "labelme"
PPOCRLABEL_DIR = "ppocrlabel"
LABELSTUDIO_NAME = "labelstudio.json"
PREDICTED_LABEL_NAME = "Label.predicted.txt"
UNKNOWN_TEXT = ""  # a predicted box has no transcription yet


def parse_save_formats(values: Optional[Sequence[str]]) -> list[str]:
    """--save-format values (repeatable, or comma-separated) -> known names in a fixed order; exit 2 otherwise."""
    names: list[str] = []
    for value in values or []:
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name not in SAVE_FORMATS:
                raise UserError(f"--save-format {part.strip()!r} is not a pre-annotation format"
                                f"{did_you_mean(name, SAVE_FORMATS)}; choose from {', '.join(SAVE_FORMATS)}.",
                                exit_code=2)
            if name not in names:
                names.append(name)
    return [name for name in SAVE_FORMATS if name in names]


@contextmanager
def _writing(what: str) -> Iterator[None]:
    """A file that cannot be written (a folder in its place, a full disk) is a UserError naming it."""
    try:
        yield
    except OSError as exc:
        where = exc.filename2 or exc.filename
        raise UserError(f"cannot write {what}{f' ({where})' if where else ''}: {exc.strerror}. Free that path or "
                        "choose another --output.") from None


@dataclass
class _Folder:
    """One image folder's output name and, for PPOCRLabel, its Label.txt being written."""

    name: str
    label_file: Optional[IO[str]] = None
    label_tmp: Optional[Path] = None


@dataclass
class Preannotator:
    """Writes each result in every requested format; use as a context manager (close on success, abort on error)."""

    output: Path
    formats: Sequence[str]
    min_rect: bool = False
    box_type: str = "quad"
    model_version: str = "openocr-det"
    notes: list[str] = field(default_factory=list)
    written: list[tuple[str, Path]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if "rrc" in self.formats and self.box_type == "poly" and not self.min_rect:
            raise UserError("--save-format rrc writes quadrilaterals (x1,y1,...,x4,y4) and --box-type poly gives "
                            "polygons: add --min-rect to write each polygon's minimum-area rectangle, or use "
                            "--box-type quad.", exit_code=2)
        self._folders: dict[str, _Folder] = {}
        self._used_names: set[str] = set()
        self._skipped_pages = 0
        self._tasks: Optional[IO[str]] = None
        self._tasks_tmp = self.output / f".{LABELSTUDIO_NAME}.{os.getpid()}.part"
        self._task_count = 0
        self._zip: Optional[zipfile.ZipFile] = None
        self._zip_tmp = self.output / f".{rrc.ZIP_NAME}.{os.getpid()}.part"
        self._zip_names: dict[str, str] = {}
        try:
            self.output.mkdir(parents=True, exist_ok=True)
            if "labelstudio" in self.formats:
                self._tasks = open(self._tasks_tmp, "w", encoding="utf-8", newline="\n")
                self._tasks.write("[")
            if "rrc" in self.formats:
                self._zip = zipfile.ZipFile(self._zip_tmp, "w")
        except OSError as exc:
            self.abort()
            raise UserError(f"cannot write pre-annotations under {self.output}: {exc.strerror}. "
                            "Choose another --output.") from None

    # -- per image ------------------------------------------------------------------------------------
    def add(self, result) -> None:
        with _writing(f"the pre-annotations of {result.source}"):
            self._add(result)

    def _add(self, result) -> None:
        regions = [Region(p.tolist(), UNKNOWN_TEXT, False, s) for p, s in zip(result.polygons, result.scores)]
        height, width = result.src_hw if result.src_hw is not None else (None, None)
        page = split_page_ref(result.path) if result.path is not None else None
        file = Path(result.path) if result.path is not None and page is None else None
        if file is not None:
            if "labelme" in self.formats:
                self._labelme(file, regions, width, height)
            if "ppocrlabel" in self.formats:
                self._ppocrlabel(file, regions)
        elif {"labelme", "ppocrlabel"} & set(self.formats):
            self._skipped_pages += 1
        if self._tasks is not None and width and height:
            task = labelstudio.task(result.source, regions, width, height, self.model_version)
            self._tasks.write(("\n" if self._task_count == 0 else ",\n") + json.dumps(task, ensure_ascii=False))
            self._task_count += 1
        if self._zip is not None:
            self._rrc(result, page, regions)

    def _folder(self, file: Path) -> _Folder:
        parent = os.path.abspath(file.parent)
        found = self._folders.get(parent)
        if found is None:
            base = os.path.basename(parent) or "images"
            name, n = base, 2
            while name in self._used_names:
                name, n = f"{base}_{n}", n + 1
            self._used_names.add(name)
            found = self._folders[parent] = _Folder(name)
        return found

    def _labelme(self, file: Path, regions: list[Region], width, height) -> None:
        folder = self.output / LABELME_DIR / self._folder(file).name
        folder.mkdir(parents=True, exist_ok=True)
        shapes = [{"label": r.text, "points": r.points, "group_id": None, "description": "",
                   "shape_type": "polygon", "flags": {}} for r in regions]
        data = {"version": labelme.LABELME_VERSION, "flags": {}, "shapes": shapes,
                "imagePath": os.path.relpath(os.path.abspath(file), os.path.abspath(folder)).replace(os.sep, "/"),
                "imageData": None, "imageHeight": height, "imageWidth": width}
        atomic_write_text(folder / f"{file.stem}.json", json.dumps(data, ensure_ascii=False, indent=2) + "\n")

    def _ppocrlabel(self, file: Path, regions: list[Region]) -> None:
        folder = self._folder(file)
        out = self.output / PPOCRLABEL_DIR / folder.name
        if folder.label_file is None:
            out.mkdir(parents=True, exist_ok=True)
            folder.label_tmp = out / f".{ppocrlabel.LABEL_NAME}.{os.getpid()}.part"
            folder.label_file = open(folder.label_tmp, "w", encoding="utf-8", newline="\n")
        folder.label_file.write(ppocrlabel.label_line(ppocrlabel.key(folder.name, file.name), regions))
        ppocrlabel.link_image(file, out / file.name)

    def _rrc(self, result, page, regions: list[Region]) -> None:
        stem = Path(result.source).stem if page is None else f"{Path(page[0]).stem}_p{page[1]}"
        name = f"{rrc.PREFIX}{stem}.txt"
        if name in self._zip_names:
            self.notes.append(f"{result.source}: {rrc.ZIP_NAME} already has {name} (for {self._zip_names[name]}); "
                              "the RRC format names files by image stem, so this image's boxes are not in the zip "
                              "(they are in det_results.txt)")
            return
        self._zip_names[name] = result.source
        rrc.add_entry(self._zip, name, rrc.file_text((r.points for r in regions), self.min_rect))

    # -- the end --------------------------------------------------------------------------------------
    def close(self) -> list[tuple[str, Path]]:
        """Finish every file and move it into place; returns (format, path) of what was written."""
        with _writing("the pre-annotation files"):
            return self._close()

    def _close(self) -> list[tuple[str, Path]]:
        if "labelme" in self.formats and (self.output / LABELME_DIR).is_dir():
            self.written.append(("labelme", self.output / LABELME_DIR))
        for folder in self._folders.values():
            if folder.label_file is not None:
                folder.label_file.close()
                folder.label_file = None
                self._finish_ppocrlabel(folder)
        if self._folders and "ppocrlabel" in self.formats and (self.output / PPOCRLABEL_DIR).is_dir():
            self.written.append(("ppocrlabel", self.output / PPOCRLABEL_DIR))
        if self._tasks is not None:
            self._tasks.write("\n]\n" if self._task_count else "]\n")
            self._tasks.close()
            self._tasks = None
            os.replace(self._tasks_tmp, self.output / LABELSTUDIO_NAME)
            self.written.append(("labelstudio", self.output / LABELSTUDIO_NAME))
        if self._zip is not None:
            self._zip.close()
            self._zip = None
            os.replace(self._zip_tmp, self.output / rrc.ZIP_NAME)
            self.written.append(("rrc", self.output / rrc.ZIP_NAME))
        if self._skipped_pages:
            self.notes.append(f"{self._skipped_pages} PDF page(s) have no image file for labelme / PPOCRLabel to "
                              f"open; they are in {LABELSTUDIO_NAME} / {rrc.ZIP_NAME} and det_results.txt only")
        return self.written

    def _finish_ppocrlabel(self, folder: _Folder) -> None:
        """Label.txt into place, unless a person has already checked images there (their work is kept)."""
        out = self.output / PPOCRLABEL_DIR / folder.name
        state = out / ppocrlabel.STATE_NAME
        reviewed = state.is_file() and state.read_text(encoding="utf-8", errors="replace").strip()
        if reviewed:
            os.replace(folder.label_tmp, out / PREDICTED_LABEL_NAME)
            self.notes.append(f"{out}: images there were already checked in PPOCRLabel ({state.name}), so its "
                              f"Label.txt was kept and these predictions are in {PREDICTED_LABEL_NAME}")
            return
        os.replace(folder.label_tmp, out / ppocrlabel.LABEL_NAME)
        state.write_text("", encoding="utf-8")

    def abort(self) -> None:
        """Remove the unfinished files (the per-image JSON files already written stay: each is complete)."""
        for handle in [f.label_file for f in self._folders.values()] + [self._tasks]:
            if handle is not None:
                handle.close()
        if self._zip is not None:
            self._zip.close()
        for tmp in [f.label_tmp for f in self._folders.values()] + [self._tasks_tmp, self._zip_tmp]:
            if tmp is not None:
                tmp.unlink(missing_ok=True)

    def __enter__(self) -> Preannotator:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
