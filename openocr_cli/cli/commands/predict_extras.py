"""predict's pre-annotation options: --save-format (labelme, ppocrlabel, labelstudio, rrc, parquet), --min-rect and
--select-uncertain N. The writing lives in formats/preannotate.py and integrations/columns.py (parquet), the score
in evaluation/uncertainty.py; this module only turns the flags into them and reports what was written."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from openocr_cli.cli.ui import console, warn
from openocr_cli.errors import UserError

SaveFormat = Annotated[Optional[list[str]], typer.Option(
    "--save-format", metavar="labelme|ppocrlabel|labelstudio|rrc|parquet",
    help="Also write the predictions for a person to correct (repeatable): labelme JSON per image, a PPOCRLabel "
         "folder (Label.txt, fileState.txt, images unchecked), Label Studio tasks (labelstudio.json), or the ICDAR "
         "submission OUTPUT/submit.zip (rrc); or as a table: OUTPUT/det_results.parquet, one row per image "
         "(parquet; needs pyarrow).")]
MinRect = Annotated[bool, typer.Option(
    "--min-rect", help="--save-format rrc with --box-type poly: write each polygon's minimum-area rectangle.")]
SelectUncertain = Annotated[Optional[int], typer.Option(
    "--select-uncertain", min=1, metavar="N",
    help="Write the N images the model is least sure about to OUTPUT/uncertain.txt (path, TAB, score; most "
         "uncertain first): the ones to label next.")]


PARQUET = "parquet"


class PredictExtras:
    """What predict does per result beyond det_results.txt; `add` per result, `finish` at the end.

    A context manager: leaving the block by an exception (an error, Ctrl-C) removes the unfinished Label.txt, zip
    and task list. Not atexit: the console script ends with os._exit, which runs no exit handlers.
    """

    def __init__(self, output: Path, save_format: Optional[list[str]], min_rect: bool,
                 select_uncertain: Optional[int], box_type: str, postprocess=None) -> None:
        from openocr_cli.formats.preannotate import Preannotator, parse_save_formats

        names = [part.strip() for value in save_format or [] for part in value.split(",")]
        formats = parse_save_formats([name for name in names if name.lower() != PARQUET])
        if min_rect and "rrc" not in formats:
            raise UserError("--min-rect applies to --save-format rrc; add --save-format rrc or drop --min-rect.",
                            exit_code=2)
        self.parquet = None
        if any(name.lower() == PARQUET for name in names):
            from openocr_cli.integrations.columns import ParquetResults

            self.parquet = ParquetResults(output)
        self.postprocess = postprocess  # the probability maps' post-processing (--select-uncertain)
        self.selection = None
        if select_uncertain is not None:
            from openocr_cli.evaluation.uncertainty import UncertainSelection

            self.selection = UncertainSelection(select_uncertain)
        self.writer = None
        if formats:
            from openocr_cli._version import __version__

            self.writer = Preannotator(output, formats, min_rect=min_rect, box_type=box_type,
                                       model_version=f"openocr-det {__version__}")
        self.output = output

    @property
    def needs_maps(self) -> bool:
        return self.selection is not None

    def add_any(self, result) -> None:
        """Every result, an unreadable image's too (its parquet row carries the error)."""
        if self.parquet is not None:
            self.parquet.add(result)

    def add(self, result) -> None:
        """A result whose image was read."""
        if self.writer is not None:
            self.writer.add(result)
        if self.selection is not None and result.prob_map is not None:
            from openocr_cli.evaluation.uncertainty import image_uncertainty

            self.selection.add(result.source, image_uncertainty(result.prob_map, self.postprocess).score)
        result.prob_map = None  # one map at a time: memory stays flat

    def finish(self) -> None:
        if self.parquet is not None:
            path = self.parquet.close()
            console.print(f"parquet: {escape(str(path))} ({self.parquet.rows} rows)", highlight=False)
            self.parquet = None
        if self.writer is not None:
            for kind, path in self.writer.close():
                console.print(f"{kind}: {escape(str(path))}", highlight=False)
            for note in self.writer.notes:
                warn(note)
        if self.selection is not None:
            from openocr_cli.evaluation.uncertainty import UNCERTAIN_NAME

            self.selection.write(self.output / UNCERTAIN_NAME)
            console.print(f"uncertain: {len(self.selection.ranked())} of {self.selection.seen} images in "
                          f"{escape(str(self.output / UNCERTAIN_NAME))}", highlight=False)

    def __enter__(self) -> PredictExtras:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            return
        if self.parquet is not None:
            self.parquet.abort()
        if self.writer is not None:
            self.writer.abort()
