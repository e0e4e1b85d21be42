"""Which config keys exist: every key of OpenOCR's det config schema, and what openocr-det does with it.

A key is `used` (it changes what openocr-det does), `ignored` (OpenOCR defines it but it has no
effect here, e.g. `Global.use_visualdl`; accepted and listed once in the run log) or unknown (a
typo: an error naming the full key path and the closest valid key, before any data is read).
Keys whose OpenOCR meaning openocr-det does not implement are refused with the reason when set
to anything but the value openocr-det honours.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from openocr_cli.errors import UserError
from openocr_cli.suggest import did_you_mean

USED, IGNORED = "used", "ignored"
Node = Union[str, dict, Callable[[Any, str], None]]

# The parameters each transform accepts (OpenOCR's names), for the `*.dataset.transforms` lists. The config check
# needs them before anything is built, so they are listed here, below the data layer; data.transforms builds the
# training ops under these names (a test checks every op's signature against its entry) and data.resize reads
# DetResizeForTest's.
TRANSFORM_PARAMS: dict[str, tuple[str, ...]] = {
    "CopyPaste": ("limit_paste", "objects_paste_ratio"),
    "DecodeImage": ("channel_first", "ignore_orientation", "img_mode"),
    "DetLabelEncode": (),
    "DetResizeForTest": ("image_shape", "keep_ratio", "limit_side_len", "limit_type", "resize_long"),
    "EastRandomCropData": ("keep_ratio", "max_tries", "min_crop_side_ratio", "size"),
    "IaaAugment": ("augmenter_args",),
    "KeepKeys": ("keep_keys",),
    "MakeBorderMap": ("epoch", "shrink_ratio", "thresh_max", "thresh_min", "total_epoch"),
    "MakeShrinkMap": ("epoch", "min_text_size", "shrink_ratio", "total_epoch"),
    "NormalizeImage": ("mean", "order", "scale", "std"),
    "ToCHWImage": (),
}
KNOWN_OPS = tuple(sorted(TRANSFORM_PARAMS))

# The learning-rate schedules OpenOCR ships (`LRScheduler.name`) and the keys each reads; training.schedules
# builds them under these names.
SCHEDULE_PARAMS: dict[str, frozenset[str]] = {
    "CosineAnnealingLR": frozenset({"warmup_epoch"}),
    "ConstLR": frozenset({"warmup_epoch"}),
    "LinearLR": frozenset({"warmup_epoch"}),
    "StepLR": frozenset({"step_size", "gamma", "warmup_epoch"}),
    "MultiStepLR": frozenset({"milestones", "gamma", "warmup_epoch"}),
    "PolynomialLR": frozenset({"lr_end", "power", "warmup_epoch"}),
    "CdistNetLR": frozenset({"n_warmup_steps", "step2_epoch"}),
    "OneCycleLR": frozenset({"warmup_epoch", "cycle_momentum"}),
    "WarmupCosineLR": frozenset({"warmup_steps", "eta_min"}),
}


def validate_ops(op_configs: list, where: str) -> None:
    """Check a `- Name: {params}` transform list (names and parameter names only, nothing is built).

    `where` is the list's key path, e.g. `Train.dataset.transforms`; every problem is a UserError
    naming the full key path of the offending entry and, when one is close, the valid spelling.
    """
    if not isinstance(op_configs, (list, tuple)):
        raise UserError(f"{where} must be a list of transforms like `- Name: {{params}}`, got {op_configs!r}.")
    for i, entry in enumerate(op_configs):
        path = f"{where}.{i}"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise UserError(f"{path} must be one transform like `- Name: {{params}}`, got {entry!r}.")
        (name, params), = entry.items()
        if name not in KNOWN_OPS:
            raise UserError(f"{path}.{name} is not a transform openocr-det knows"
                            f"{did_you_mean(name, KNOWN_OPS, f'{path}.')}. Known: {', '.join(KNOWN_OPS)}.")
        if params is None:
            continue
        if not isinstance(params, dict):
            raise UserError(f"{path}.{name} must be a mapping of parameters (or empty), got {params!r}.")
        accepted = TRANSFORM_PARAMS[name]
        for key in params:
            if key not in accepted:
                hint = did_you_mean(key, accepted, f"{path}.{name}.")
                listing = f"Its parameters: {', '.join(accepted)}." if accepted else f"{name} takes no parameters."
                raise UserError(f"{path}.{name}.{key} is not a parameter of {name}{hint}. {listing}")


def _transforms(value: Any, where: str) -> None:
    if value is not None:
        validate_ops(value, where)


def _dataset() -> dict:
    return {"name": USED, "data_dir": USED, "label_file_list": USED, "ratio_list": USED, "delimiter": USED,
            "ext_op_transform_idx": USED, "transforms": _transforms}


CACHE_MODES = ("none", "ram", "disk")


def _cache_mode(value: Any, where: str) -> None:
    """openocr-det's decode cache (data.decode_cache): none (also empty/false), ram or disk."""
    if value is not None and value is not False and str(value).strip().lower() not in CACHE_MODES:
        raise UserError(f"{where} is {value!r}; it must be one of {', '.join(CACHE_MODES)}.")


_LOADER = {"shuffle": USED, "drop_last": USED, "batch_size_per_card": USED, "num_workers": USED,
           "pin_memory": IGNORED, "use_shared_memory": IGNORED}

SCHEMA: dict[str, Node] = {
    "Global": {
        **dict.fromkeys(("device", "epoch_num", "log_smooth_window", "print_batch_step", "output_dir",
                         "save_epoch_step", "save_iter_step", "eval_batch_step", "eval_epoch_step",
                         "cal_metric_during_train", "pretrained_model", "checkpoints", "use_tensorboard", "seed",
                         "use_amp", "grad_clip_val", "accumulation_steps", "use_sync_bn"), USED),
        # openocr-det's own training guards (saved with the config, so resume keeps them)
        **dict.fromkeys(("patience", "min_delta", "max_nonfinite_steps", "scale_lr", "amp"), USED),
        "use_mlflow": USED,  # openocr-det's MLflow tracker (`--log mlflow`), beside OpenOCR's use_tensorboard
        # read by OpenOCR's inference/export tools, its recognition models or its wandb logger: no effect here
        **dict.fromkeys(("distributed", "model_type", "infer_img", "save_res_path", "save_inference_dir",
                         "character_dict_path", "max_text_length", "use_space_char", "use_visualdl", "export_dir",
                         "backend", "onnx_model_path", "is_visualize", "run_name", "total_iter_steps",
                         "use_transformers", "resume_from_iter"), IGNORED),
    },
    "Architecture": {"model_type": USED, "algorithm": USED, "Transform": USED,
                     "Backbone": {"name": USED, "in_channels": USED},
                     "Neck": {"name": USED, "out_channels": USED, "shortcut": USED},
                     "Head": {"name": USED, "k": USED}},
    "Loss": dict.fromkeys(("name", "balance_loss", "main_loss_type", "alpha", "beta", "ohem_ratio", "eps"), USED),
    "Optimizer": dict.fromkeys(("name", "lr", "betas", "eps", "weight_decay", "amsgrad", "filter_bias_and_bn"),
                               USED),
    "LRScheduler": USED,  # keys depend on the schedule's name: checked by _scheduler
    "PostProcess": dict.fromkeys(("name", "thresh", "box_thresh", "max_candidates", "unclip_ratio", "use_dilation",
                                  "score_mode", "box_type"), USED),
    "Metric": {"name": USED, "main_indicator": USED},
    "Train": {"dataset": {**_dataset(), "cache": _cache_mode}, "loader": _LOADER},
    "Eval": {"dataset": _dataset(), "loader": _LOADER},
    # the config file's stem (both tools store it), then OpenOCR's own command-line flags
    "filename": USED, "config": IGNORED, "local_rank": IGNORED, "eval": IGNORED, "profiler_options": IGNORED,
}


def _one_of(*allowed: Any) -> Callable[[Any], bool]:
    return lambda value: value is None or value in allowed


# key -> (accepted values, why anything else is refused)
REFUSED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "Global.cal_metric_during_train": (_one_of(False), "openocr-det measures the metric on the Eval set only; "
                                       "set it to false"),
    "Loss.name": (_one_of("DBLoss"), "openocr-det trains DBNet with DBLoss"),
    "Loss.main_loss_type": (_one_of("DiceLoss"), "the shrink-map loss of repvit_db.yml is DiceLoss"),
    "PostProcess.name": (_one_of("DBPostProcess"), "openocr-det post-processes with DBPostProcess"),
    "Metric.name": (_one_of("DetMetric"), "openocr-det scores with DetMetric"),
    "Metric.main_indicator": (_one_of("hmean"), "best.pth is chosen by hmean"),
    "Optimizer.name": (_one_of("Adam", "AdamW"), "openocr-det trains with torch.optim Adam or AdamW"),
    "Train.dataset.name": (_one_of("SimpleDataSet"), "openocr-det reads SimpleDataSet label files"),
    "Eval.dataset.name": (_one_of("SimpleDataSet"), "openocr-det reads SimpleDataSet label files"),
    "Train.dataset.delimiter": (_one_of("\t"), "label lines are split at a TAB"),
    "Eval.dataset.delimiter": (_one_of("\t"), "label lines are split at a TAB"),
    "Train.dataset.ext_op_transform_idx": (_one_of(2), "CopyPaste's extra image goes through DecodeImage and "
                                           "DetLabelEncode, the first two ops"),
}


@dataclass
class SchemaReport:
    """What a config holds that has no effect in openocr-det (dotted key paths)."""

    ignored: list[str] = field(default_factory=list)


def check_config(cfg: Mapping, source: str, exit_code: int = 1) -> SchemaReport:
    """Raise UserError for the first unknown key or refused value; return the ignored keys."""
    report = SchemaReport()
    _walk(cfg, SCHEMA, "", source, exit_code, report)
    return report


def _walk(node: Any, schema: dict, prefix: str, source: str, code: int, report: SchemaReport) -> None:
    if not isinstance(node, Mapping):
        name = prefix.rstrip(".") or "the config"
        raise UserError(f"{source}: {name} must be a mapping of keys, got {node!r}.", exit_code=code)
    for key, value in node.items():
        path = f"{prefix}{key}"
        rule = schema.get(str(key))
        if rule is None:
            hint = did_you_mean(str(key), schema, prefix)
            used = sorted(str(k) for k, v in schema.items() if v != IGNORED)
            raise UserError(f"{source}: unknown config key `{path}`{hint}. Fix the spelling or remove it "
                            f"(keys openocr-det reads here: {', '.join(used)}).", exit_code=code)
        if rule == IGNORED:
            report.ignored.append(path)
        elif isinstance(rule, dict):
            if value is not None:
                _walk(value, rule, f"{path}.", source, code, report)
        elif callable(rule):
            try:
                rule(value, path)
            except UserError as exc:
                raise UserError(f"{source}: {exc}", exit_code=code) from exc
        elif path == "LRScheduler" and value is not None:
            _scheduler(value, source, code)
        accepted, why = REFUSED.get(path, (None, ""))
        if accepted is not None and not accepted(value):
            raise UserError(f"{source}: {path} is {value!r}, which openocr-det does not support: {why}.",
                            exit_code=code)


def _scheduler(section: Any, source: str, code: int) -> None:
    if not isinstance(section, Mapping):
        raise UserError(f"{source}: LRScheduler must be a mapping of keys, got {section!r}.", exit_code=code)
    name = section.get("name", "CosineAnnealingLR")
    if name not in SCHEDULE_PARAMS:
        raise UserError(f"{source}: LRScheduler.name {name!r} is not one of OpenOCR's schedules"
                        f"{did_you_mean(str(name), SCHEDULE_PARAMS)}: {', '.join(SCHEDULE_PARAMS)}.", exit_code=code)
    known = {"name", *SCHEDULE_PARAMS[name]}
    for key in section:
        if key not in known:
            raise UserError(f"{source}: `LRScheduler.{key}` is not a parameter of {name}"
                            f"{did_you_mean(str(key), known, 'LRScheduler.')} (its parameters: "
                            f"{', '.join(sorted(known))}).", exit_code=code)
