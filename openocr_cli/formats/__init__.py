"""Label formats `openocr-det convert` reads and writes, by name; each module is one format over formats.label_model."""

from __future__ import annotations

from openocr_cli.errors import UserError
from openocr_cli.formats import (
    coco,
    doctr,
    icdar2015,
    labelme,
    labelstudio,
    mmocr,
    ppocr,
    ppocrlabel,
    rrc,
    totaltext,
)
from openocr_cli.formats.label_model import Format
from openocr_cli.suggest import did_you_mean

FORMATS: dict[str, Format] = {f.name: f for f in (ppocr.FORMAT, icdar2015.FORMAT, labelme.FORMAT, coco.FORMAT,
                                                  totaltext.FORMAT, labelstudio.FORMAT, ppocrlabel.FORMAT, rrc.FORMAT,
                                                  mmocr.FORMAT, doctr.FORMAT)}


def get_format(name: str, flag: str) -> Format:
    """The format called `name`; a usage error (exit 2) listing the known ones otherwise."""
    found = FORMATS.get(name.strip().lower())
    if found is None:
        raise UserError(f"unknown format {name!r} for {flag}{did_you_mean(name, FORMATS)}; "
                        f"known formats: {', '.join(FORMATS)}.", exit_code=2)
    return found


def writable_names() -> list[str]:
    return [name for name, f in FORMATS.items() if f.write is not None]
