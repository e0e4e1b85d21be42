"""Options and set-up shared by the inference-side subcommands (predict, eval)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from openocr_cli import config as cfgmod
from openocr_cli.data.resize import Normalizer, ResizeSpec
from openocr_cli.engine.backends import TorchBackend, resolve_device
from openocr_cli.engine.predictor import Predictor
from openocr_cli.errors import UserError
from openocr_cli.postprocess import DBPostProcess


class ScoreMode(str, Enum):
    slow = "slow"
    fast = "fast"


class BoxType(str, Enum):
    quad = "quad"
    poly = "poly"


class LimitType(str, Enum):
    max = "max"
    min = "min"
    resize_long = "resize_long"


DEFAULT_WEIGHTS = "repvit"

Weights = Annotated[str, typer.Option("--weights", "-w", help="Checkpoint .pth (OpenOCR or ours) or a model name from `openocr-det download --list`.")]
ConfigPath = Annotated[Optional[Path], typer.Option("--config", "-c", help="OpenOCR-style YAML config (default: packaged repvit_db.yml).")]
Overrides = Annotated[Optional[list[str]], typer.Option("--override", "-o", help="Config override Key.sub=value (repeatable), e.g. -o PostProcess.box_thresh=0.5.")]
Device = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda or cuda:N (default: cuda if available).")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass (same-size images are batched).")]
Workers = Annotated[int, typer.Option("--workers", min=1, help="Threads decoding and resizing images.")]
Thresh = Annotated[Optional[float], typer.Option("--thresh", min=0.0, max=1.0, help="Pixel threshold on the probability map (config default: 0.3).")]
BoxThresh = Annotated[Optional[float], typer.Option("--box-thresh", min=0.0, max=1.0, help="Minimum box score (config default: 0.6).")]
UnclipRatio = Annotated[Optional[float], typer.Option("--unclip-ratio", min=0.0, help="Box expansion ratio (config default: 1.5).")]
ScoreModeOpt = Annotated[Optional[ScoreMode], typer.Option("--score-mode", case_sensitive=False, help="Box score: slow (polygon mean) or fast (box mean) (config default: slow).")]
BoxTypeOpt = Annotated[Optional[BoxType], typer.Option("--box-type", case_sensitive=False, help="quad (4 points) or poly (polygons) (config default: quad).")]
LimitSide = Annotated[Optional[int], typer.Option("--limit-side-len", min=32, help="Resize limit in pixels (config default: 960).")]
LimitTypeOpt = Annotated[Optional[LimitType], typer.Option("--limit-type", case_sensitive=False, help="max: longest side <= limit; min: shortest side >= limit; resize_long: longest side = limit (config default: max).")]
NonStrict = Annotated[bool, typer.Option("--non-strict", help="Load only the tensors that match the model and report the rest.")]


@dataclass
class InferenceSettings:
    """Everything the inference drivers take from flags and config, resolved once."""

    weights: str
    config: Optional[Path]
    overrides: Optional[list[str]]
    device: Optional[str]
    batch_size: int
    workers: int
    thresh: Optional[float]
    box_thresh: Optional[float]
    unclip_ratio: Optional[float]
    score_mode: Optional[ScoreMode]
    box_type: Optional[BoxType]
    limit_side_len: Optional[int]
    limit_type: Optional[LimitType]
    non_strict: bool

    def load_config(self) -> dict:
        return cfgmod.apply_overrides(cfgmod.load_config(self.config), self.overrides or [])

    def build_postprocess(self, cfg: dict) -> DBPostProcess:
        params = cfgmod.postprocess_params(cfg)
        flags = {"thresh": self.thresh, "box_thresh": self.box_thresh, "unclip_ratio": self.unclip_ratio,
                 "score_mode": self.score_mode.value if self.score_mode else None,
                 "box_type": self.box_type.value if self.box_type else None}
        params.update({k: v for k, v in flags.items() if v is not None})
        try:
            return DBPostProcess(**params)
        except (TypeError, ValueError) as exc:
            raise UserError(f"post-processing settings are invalid: {exc}", exit_code=2) from None

    def build_resize(self, cfg: dict) -> ResizeSpec:
        params = cfgmod.resize_params(cfg)
        if self.limit_side_len is not None or self.limit_type is not None:
            params = {"limit_side_len": self.limit_side_len or int(params.get("limit_side_len", 960)),
                      "limit_type": self.limit_type.value if self.limit_type else params.get("limit_type", "max")}
        return ResizeSpec.from_params(params)

    def build_predictor(self, cfg: dict) -> Predictor:
        from openocr_cli.hub import resolve_weights

        postprocess = self.build_postprocess(cfg)
        resize = self.build_resize(cfg)
        device = resolve_device(self.device)
        weights = resolve_weights(self.weights)
        backend = TorchBackend.from_checkpoint(weights, device, cfg.get("Architecture"), strict=not self.non_strict)
        return Predictor(backend, resize, Normalizer(**cfgmod.normalize_params(cfg)), postprocess,
                         batch_size=self.batch_size, workers=self.workers)
