"""Checkpoints in OpenOCR's layout: safe loading (weights_only), key checks with a clear report, atomic saves.

OpenOCR stores `{"state_dict", "optimizer", "scheduler", "epoch", "global_step", "config",
"metrics"}`; the released weights may also be a bare state dict. Both load here, `module.`
prefixes (DDP) are stripped, and nothing is ever unpickled beyond tensors and plain types.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from openocr_cli.errors import MissingFileError, UserError, disk_full, is_no_space
from openocr_cli.fileio import atomic_path

log = logging.getLogger(__name__)

MAX_LISTED_KEYS = 5
MISMATCH_COLUMNS = ("problem", "key", "shapes")


def read_checkpoint(path: Path) -> Any:
    """torch.load with weights_only=True; every failure becomes a UserError naming the file."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"weights file {path} does not exist. Check the path, or pass a model name "
                               "such as 'repvit' (see `openocr-det download --list`).")
    if path.is_dir():
        raise UserError(f"weights path {path} is a folder; pass the .pth file inside it (for example {path}/best.pth).")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file can make the unpickler fail in many ways
        what = _not_a_torch_file(path)  # torch blames weights_only for files that are no checkpoint at all
        if what is not None:
            raise UserError(f"{path} is not a readable PyTorch checkpoint ({what}): pass a .pth file saved by "
                            "OpenOCR or openocr-det training.") from exc
        if isinstance(exc, pickle.UnpicklingError):
            if "weights_only" in str(exc) or "Unsupported global" in str(exc):
                raise UserError(
                    f"{path} needs arbitrary Python objects to load, so it was refused: loading it could run "
                    "code hidden in the file. Only checkpoints made of tensors and plain values are accepted "
                    "(OpenOCR's and ours are). If you trust the file, re-save just its state_dict with PyTorch."
                ) from exc
            raise UserError(f"{path} is not a PyTorch checkpoint ({exc}).") from exc
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path} is not a readable PyTorch checkpoint ({reason}). "
                        "Pass a .pth file saved by OpenOCR or openocr-det.") from exc


# torch.save's legacy (pre-1.6, or _use_new_zipfile_serialization=False) format pickles this number first.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_SIGNATURES = (
    (b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip file"), (b"7z\xbc\xaf", "a 7-Zip archive"), (b"Rar!", "a RAR archive"),
)


def _not_a_torch_file(path: Path) -> Optional[str]:
    """What the file is when its first bytes show it is no torch.save file at all; None when it may be one.

    torch.save writes a zip archive (PyTorch >= 1.6), or a pickle starting with a magic number (the legacy
    format, or a tar archive before that). Anything else (an image, a text file, an empty file) would fail
    inside the unpickler, where PyTorch blames weights_only for it.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None  # torch.load reports it
    if head.startswith(b"PK\x03\x04") or head[257:262] == b"ustar":
        return None
    if _LEGACY_MAGIC.to_bytes(10, "little") in head[:64] or str(_LEGACY_MAGIC).encode() in head[:64]:
        return None
    if not head:
        return "the file is empty"
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return f"it is {kind}"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "it is a WebP image"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "it is a Python pickle that torch.save did not write"
    if _looks_like_text(head):
        return "it is a text file"
    return "it is neither a zip archive nor a pickle, the two forms torch.save writes"


def _looks_like_text(head: bytes) -> bool:
    for cut in range(4):  # the read may end inside a multi-byte character
        try:
            text = head[:len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return bool(text) and all(c.isprintable() or c in "\t\r\n\ufeff" for c in text)
    return False


def extract_state_dict(obj: Any, source: Path | str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights inside an OpenOCR checkpoint dict or a bare state dict, without `module.`."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{source} holds no model weights: expected a state dict of tensors, or a dict "
                        "with the weights under 'state_dict' (OpenOCR's layout).")
    return {_strip_module(str(k)): v for k, v in obj.items()}


def _strip_module(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


@dataclass
class LoadReport:
    """What a weight load matched; `ok` when every key of the model and the file lined up."""

    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    saved_config: Any = None  # the checkpoint's "config" entry (OpenOCR's layout), if any

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def mismatch_rows(self) -> list[tuple[str, str, str]]:
        """(problem, key, shapes) for up to MAX_LISTED_KEYS keys of each kind, then "... and N more"."""
        rows = []
        for kind, keys in (("missing from file", self.missing), ("unexpected in file", self.unexpected)):
            for key in keys[:MAX_LISTED_KEYS]:
                rows.append((kind, key, ""))
            if len(keys) > MAX_LISTED_KEYS:
                rows.append((kind, f"... and {len(keys) - MAX_LISTED_KEYS} more", ""))
        for key, want, got in self.wrong_shape[:MAX_LISTED_KEYS]:
            rows.append(("wrong shape", key, f"model {list(want)} / file {list(got)}"))
        if len(self.wrong_shape) > MAX_LISTED_KEYS:
            rows.append(("wrong shape", f"... and {len(self.wrong_shape) - MAX_LISTED_KEYS} more", ""))
        return rows

    def log_mismatch(self, title: str) -> None:
        """Warn about the keys that did not line up: a table on the command line (the record's "table"),
        the same as plain lines for other logging handlers."""
        rows = self.mismatch_rows()
        lines = [f"{title}:"] + [f"  {kind}: {key}" + (f" ({shapes})" if shapes else "") for kind, key, shapes in rows]
        log.warning("%s", "\n".join(lines), extra={"table": (title, list(MISMATCH_COLUMNS), rows)})


def compare_keys(model: torch.nn.Module, weights: Mapping[str, torch.Tensor]) -> LoadReport:
    expected = model.state_dict()
    report = LoadReport()
    for key, tensor in expected.items():
        if key not in weights:
            report.missing.append(key)
        elif tuple(weights[key].shape) != tuple(tensor.shape):
            report.wrong_shape.append((key, tuple(tensor.shape), tuple(weights[key].shape)))
        else:
            report.loaded += 1
    report.unexpected = [k for k in weights if k not in expected]
    return report


def load_weights(model: torch.nn.Module, path: Path, strict: bool = True) -> LoadReport:
    """Load a checkpoint into `model`. Strict: any mismatch logs a table of the keys and raises UserError.

    Non-strict loads every key whose name and shape match and reports the rest as a warning (logged).
    """
    obj = read_checkpoint(path)
    weights = extract_state_dict(obj, path)
    report = compare_keys(model, weights)
    if isinstance(obj, Mapping) and isinstance(obj.get("config"), Mapping):
        report.saved_config = obj["config"]
    if report.loaded == 0:
        report.log_mismatch(f"{path}: no tensor matches the RepViT-DB model")
        what = (f"all its {len(report.wrong_shape)} tensors have the model's names but other shapes (another size "
                "of the architecture?)" if report.wrong_shape and not report.missing else "none of its keys match. "
                "Was it exported from a different architecture?")
        raise UserError(f"{path} is not a checkpoint of this model (RepViT-DB, {len(model.state_dict())} "
                        f"tensors): {what}")
    if not report.ok:
        if strict:
            report.log_mismatch(f"{path}: keys that do not match the model")
            raise UserError(
                f"{path} does not match the RepViT-DB model: {len(report.missing)} missing, "
                f"{len(report.unexpected)} unexpected and {len(report.wrong_shape)} wrong-shape keys "
                f"({report.loaded} match). Use a checkpoint of this architecture, or --non-strict to "
                "load only the matching tensors."
            )
        report.log_mismatch(f"{path}: loaded {report.loaded} tensors; these were skipped")
    skipped = {key for key, _, _ in report.wrong_shape}
    known = model.state_dict().keys()  # once: building it per key made loading take 0.3 s
    kept = {k: v for k, v in weights.items() if k in known and k not in skipped}
    broken = [k for k, v in kept.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise UserError(f"{path} holds weights that are not finite (NaN or inf) in {len(broken)} tensor(s), the "
                        f"first {broken[0]}: such a model detects nothing. Use an earlier checkpoint of the run (its "
                        "best.pth or an epoch_N.pth).")
    model.load_state_dict(kept, strict=False)
    return report


def standard_layout(tree: Any) -> Any:
    """`tree` (a state dict, an optimizer state) with every tensor in the standard contiguous layout.

    Training keeps its weights channels-last; the files stay in the layout OpenOCR and plain PyTorch code expect,
    whatever device and layout wrote them (resume gives the optimizer's moments their parameter's layout again).
    """
    if isinstance(tree, torch.Tensor):
        return tree.contiguous()
    if isinstance(tree, dict):
        out = type(tree)((k, standard_layout(v)) for k, v in tree.items())
        if hasattr(tree, "_metadata"):  # a state dict's module versions
            out._metadata = tree._metadata
        return out
    if isinstance(tree, (list, tuple)):
        return type(tree)(standard_layout(v) for v in tree)
    return tree


def save_checkpoint(obj: Mapping[str, Any], path: Path) -> None:
    """torch.save atomically and durably: a temporary file in the same folder, fsynced, renamed over `path`,
    then the folder fsynced (fileio.atomic_path); an interrupted save leaves the previous file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    needed = path.stat().st_size if path.exists() else _tensor_bytes(obj)  # what the same model saves
    try:
        with atomic_path(path, durable=True) as tmp:
            with open(tmp, "wb") as f:
                torch.save(dict(obj), f)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as RuntimeError
        if any(is_no_space(e) for e in (exc, exc.__cause__, exc.__context__)):
            raise disk_full(path.parent, needed) from None
        raise


def _tensor_bytes(tree: Any) -> int:
    if isinstance(tree, torch.Tensor):
        return tree.element_size() * tree.nelement()
    if isinstance(tree, Mapping):
        return sum(_tensor_bytes(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(_tensor_bytes(v) for v in tree)
    return 0
