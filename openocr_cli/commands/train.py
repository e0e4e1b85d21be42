"""`openocr-det train` and `openocr-det resume`: fine-tune with a live display, continue a stopped run."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from openocr_cli import config as cfgmod
from openocr_cli.checkpoint import read_checkpoint
from openocr_cli.data.dataset import select_by_ratio, validate_training_labels
from openocr_cli.data.labels import MAX_REPORTED_PROBLEMS, load_labels
from openocr_cli.engine import distributed as ddp
from openocr_cli.engine.backends import resolve_device
from openocr_cli.engine.trainer import RunData, Trainer, TrainingInterrupted
from openocr_cli.errors import UserError
from openocr_cli.training_ui import TrainDisplay
from openocr_cli.ui import console, quiet_unless_main, table, warn

DEFAULT_OUTPUT = Path("output/det_repvit_db")
LOG_FORMAT = "[%(asctime)s] %(name)s %(levelname)s: %(message)s"

GpusOpt = Annotated[Optional[str], typer.Option("--gpus", help="CUDA devices, e.g. 0,1,2,3: one process per device under torchrun (DDP).")]
NprocOpt = Annotated[Optional[int], typer.Option("--nproc-per-node", min=1, help="Processes on this machine (with --device cpu: gloo DDP on CPU).")]
NnodesOpt = Annotated[int, typer.Option("--nnodes", min=1, help="Number of machines (multi-node training).")]
NodeRankOpt = Annotated[int, typer.Option("--node-rank", min=0, help="This machine's rank among --nnodes.")]
MasterAddrOpt = Annotated[Optional[str], typer.Option("--master-addr", help="Address of the rank-0 machine.")]
MasterPortOpt = Annotated[Optional[int], typer.Option("--master-port", min=1, max=65535, help="Port of the rank-0 machine.")]
RdzvOpt = Annotated[Optional[str], typer.Option("--rdzv-endpoint", help="host:port of a c10d rendezvous (instead of --master-addr/--master-port).")]


def train(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="OpenOCR-style YAML, read unchanged (default: packaged repvit_db.yml).")] = None,
    override: Annotated[Optional[list[str]], typer.Option("--override", "-o", help="Config override Key.sub=value, value parsed as YAML (repeatable).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Folder the label paths are relative to (default: ./icdar2015/text_localization/).")] = None,
    train_label: Annotated[Optional[list[Path]], typer.Option("--train-label", help="Training label file(s), repeatable.")] = None,
    eval_label: Annotated[Optional[list[Path]], typer.Option("--eval-label", help="Evaluation label file(s), repeatable.")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", "-w", help="Pretrained weights: a .pth, a model name (repvit), or 'none' to train from scratch.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", help="Run folder (default: ./output/det_repvit_db).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Number of epochs (config default: 500).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", min=1, help="Images per batch per device (config default: 8).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", min=0.0, help="Peak learning rate (config default: 0.001).")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=0, help="Data-loading worker processes (config default: 8).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu, cuda or cuda:N (default: cuda if available).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed (config default: 48).")] = None,
    amp: Annotated[Optional[bool], typer.Option("--amp/--no-amp", help="Mixed precision on CUDA.")] = None,
    eval_every: Annotated[Optional[int], typer.Option("--eval-every", min=0, help="Evaluate every N iterations, 0 = only at epoch ends (config default: 1000).")] = None,
    save_every: Annotated[Optional[int], typer.Option("--save-every", min=0, help="Also save latest.pth every N iterations (default: off).")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Train on the valid label lines and report how many were skipped.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start over in an --output folder that already holds a run.")] = False,
    sync_bn: Annotated[bool, typer.Option("--sync-bn", help="SyncBatchNorm across GPUs in distributed runs.")] = False,
    gpus: GpusOpt = None,
    nproc_per_node: NprocOpt = None,
    nnodes: NnodesOpt = 1,
    node_rank: NodeRankOpt = 0,
    master_addr: MasterAddrOpt = None,
    master_port: MasterPortOpt = None,
    rdzv_endpoint: RdzvOpt = None,
) -> None:
    """Fine-tune the detector on ICDAR/PaddleOCR-format data.

    Defaults follow OpenOCR's repvit_db.yml: data in ./icdar2015/text_localization/, the released weights as the starting point, Adam with cosine schedule. The run folder gets latest.pth, best.pth, config.yml, train.log and metrics.jsonl; Ctrl-C saves latest.pth and prints the resume command.

    Examples:

      openocr-det train --data-dir data --train-label data/train.txt --eval-label data/test.txt --epochs 50

      openocr-det train --weights none --device cpu --batch-size 4 -o Global.print_batch_step=10
    """
    device = _launch_if_needed(gpus, nproc_per_node, nnodes, node_rank, master_addr, master_port, rdzv_endpoint, device)
    cfg = cfgmod.apply_overrides(cfgmod.load_config(config), override or [])
    if sync_bn:
        cfg.setdefault("Global", {})["use_sync_bn"] = True
    cfg = apply_train_flags(cfg, data_dir=data_dir, train_label=train_label, eval_label=eval_label, weights=weights,
                            output=output, epochs=epochs, batch_size=batch_size, lr=lr, workers=workers,
                            device=device, seed=seed, amp=amp, eval_every=eval_every, save_every=save_every)
    out = Path(str(cfg["Global"]["output_dir"]))
    if (out / "latest.pth").exists() and not overwrite and ddp.role_from_env().is_main:
        raise UserError(f"{out} already holds a training run (latest.pth). Continue it with "
                        f"`openocr-det resume {out}`, choose another --output, or pass --overwrite to start over.")
    if overwrite and ddp.role_from_env().is_main:
        for name in ("metrics.jsonl", "train.log"):
            (out / name).unlink(missing_ok=True)
    run(cfg, skip_bad=skip_bad)


def apply_train_flags(cfg: dict, **flags) -> dict:
    """First-class flags are shorthands for config keys; they win over the YAML and -o."""
    g = cfg.setdefault("Global", {})
    train_ds = cfg.setdefault("Train", {}).setdefault("dataset", {})
    eval_ds = cfg.setdefault("Eval", {}).setdefault("dataset", {})
    loader = cfg["Train"].setdefault("loader", {})
    if flags["data_dir"] is not None:
        train_ds["data_dir"] = eval_ds["data_dir"] = str(flags["data_dir"])
    if flags["train_label"]:
        train_ds["label_file_list"] = [str(p) for p in flags["train_label"]]
        train_ds["ratio_list"] = [1.0] * len(flags["train_label"])
    if flags["eval_label"]:
        eval_ds["label_file_list"] = [str(p) for p in flags["eval_label"]]
    if flags["weights"] is not None:
        g["pretrained_model"] = None if flags["weights"].strip().lower() in ("none", "") else flags["weights"]
    simple = {"output": (g, "output_dir", str), "epochs": (g, "epoch_num", int), "lr": (cfg.setdefault("Optimizer", {}), "lr", float),
              "batch_size": (loader, "batch_size_per_card", int), "workers": (loader, "num_workers", int),
              "device": (g, "device", str), "seed": (g, "seed", int), "amp": (g, "use_amp", bool)}
    for flag, (section, key, kind) in simple.items():
        if flags[flag] is not None:
            section[key] = kind(flags[flag])
    if flags["eval_every"] is not None:
        g["eval_batch_step"] = [0, flags["eval_every"]]
    if flags["save_every"] is not None:
        g["save_iter_step"] = [0, flags["save_every"]]
    g.setdefault("output_dir", str(DEFAULT_OUTPUT))
    return cfg


def load_run_data(cfg: dict, skip_bad: bool) -> RunData:
    """Validate the training labels once (every problem as file:line) and load the eval labels."""
    train_ds = (cfg.get("Train") or {}).get("dataset") or {}
    data_dir = Path(str(train_ds.get("data_dir", ".")))
    files = [Path(str(p)) for p in train_ds.get("label_file_list") or []]
    missing = [p for p in files if not p.is_file()]
    if not files or missing or not data_dir.is_dir():
        what = f"label file {missing[0]}" if missing else (f"data folder {data_dir}" if files else "training label file")
        raise UserError(f"training data not found: {what} does not exist. Pass --data-dir DIR and --train-label FILE "
                        "(PaddleOCR format: image path, TAB, JSON list of {transcription, points}), or run "
                        "`make demo` to try training on generated data.")
    with console.status("validating the training labels and images ..."):
        checked = validate_training_labels(files, data_dir)
    if checked.problems:
        shown = "\n".join(f"  {p}" for p in checked.problems[:MAX_REPORTED_PROBLEMS if skip_bad else None])
        if not skip_bad:
            raise UserError(f"{len(checked.problems)} training label line(s) cannot be used:\n{shown}\n"
                            "Fix them, or pass --skip-bad to train on the other lines.")
        warn(f"--skip-bad: skipped {len(checked.problems)} bad label line(s), training on {len(checked.samples)}:\n{shown}")
    if not checked.samples:
        raise UserError("no usable training samples remain.")
    ratios = train_ds.get("ratio_list", 1.0)
    ratios = [float(ratios)] * len(files) if not isinstance(ratios, list) else [float(r) for r in ratios]
    if len(ratios) != len(files):
        raise UserError(f"Train.dataset.ratio_list has {len(ratios)} values for {len(files)} label files.")
    per_file = [[s for s in checked.samples if s.source == str(f)] for f in files]
    train = select_by_ratio(per_file, ratios, int(cfg["Global"].get("seed", 48)))

    eval_ds = (cfg.get("Eval") or {}).get("dataset") or {}
    eval_files = [Path(str(p)) for p in eval_ds.get("label_file_list") or []]
    eval_samples = []
    missing = [p for p in eval_files if not p.is_file()]
    if missing:
        raise UserError(f"evaluation label file {missing[0]} does not exist. Pass --eval-label FILE, or "
                        "-o Eval.dataset.label_file_list=[] to train without evaluation.")
    if eval_files:
        eval_samples = load_labels(eval_files, Path(str(eval_ds.get("data_dir", data_dir))), check_images=True)
    else:
        warn("no evaluation labels (--eval-label): no metric and no best.pth will be produced.")
    return RunData(train, eval_samples)


def _setup_log(output_dir: Path) -> logging.Handler:
    output_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(output_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT, "%Y/%m/%d %H:%M:%S"))
    logger = logging.getLogger("openocr_det")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return handler


def run(cfg: dict, skip_bad: bool = False, resume: Optional[dict] = None, resume_from: Optional[Path] = None) -> None:
    """Build the trainer and run it with the live display; Ctrl-C ends with the resume command."""
    g = cfg["Global"]
    role = ddp.role_from_env()
    quiet_unless_main(role.is_main)
    device = resolve_device(None if str(g.get("device", "gpu")) == "gpu" else str(g["device"]))
    device = ddp.init(role, device)
    output_dir = Path(str(g["output_dir"]))
    data = load_run_data(cfg, skip_bad)
    handler = _setup_log(output_dir) if role.is_main else logging.NullHandler()
    try:
        display = TrainDisplay(console)
        trainer = Trainer(cfg, data, device, output_dir, resume=resume, display=display.event, role=role)
        if trainer.finished:
            console.print(f"Training already finished: {trainer.epochs} of {trainer.epochs} epochs done "
                          f"(best hmean {float(trainer.best.get('hmean', 0)):.4f}). To train longer: "
                          f"openocr-det resume {shlex.quote(str(resume_from or output_dir))} --epochs N")
            return
        batch = trainer.batch_size
        logging.getLogger("openocr_det").info(
            "run with torch %s and device %s; world size %d, batch %d per process, effective batch %d; "
            "%d train / %d eval images", _torch_version(), device, role.world_size, batch, batch * role.world_size,
            len(data.train), len(data.eval))
        if role.distributed:
            console.print(f"DDP: world size {role.world_size} ({device.type}), batch {batch} per process, "
                          f"effective batch {batch * role.world_size}")
        try:
            with display.live(trainer):
                best = trainer.train(on_step=display.step)
        except TrainingInterrupted as stop:
            console.print(f"[yellow]Stopped after iteration {stop.position.global_step}; saved {stop.checkpoint}."
                          f"[/yellow]\nResume with: openocr-det resume {shlex.quote(str(output_dir))}")
            # under our own launcher a clean exit lets torchrun stop quietly; the launching command exits 130
            raise typer.Exit(0 if ddp.launched_by_us() else 130) from None
        _summary(trainer, best, output_dir)
    finally:
        logging.getLogger("openocr_det").removeHandler(handler)
        handler.close()
        ddp.shutdown()


def _launch_if_needed(gpus, nproc_per_node, nnodes, node_rank, master_addr, master_port, rdzv_endpoint,
                      device: Optional[str]) -> Optional[str]:
    """Re-run this command under torch.distributed.run when several processes are asked for.

    Returns the device to use in this process (`--gpus 0` -> cuda:0); exits with the launcher's code
    after a launch. Inside a torchrun worker it does nothing: the launcher already did its job.
    """
    ids = ddp.parse_gpus(gpus)
    if ids and device is not None and not device.startswith(("cuda", "gpu")):
        raise UserError(f"--gpus asks for CUDA devices but --device is {device}; drop one of them.", exit_code=2)
    if ddp.under_launcher():
        return device
    nproc = nproc_per_node or max(len(ids), 1)
    if ids and nproc_per_node and nproc_per_node != len(ids):
        raise UserError(f"--gpus names {len(ids)} device(s) but --nproc-per-node is {nproc_per_node}.", exit_code=2)
    if nproc == 1 and nnodes == 1:
        return f"cuda:{ids[0]}" if ids else device
    if node_rank >= nnodes:
        raise UserError(f"--node-rank {node_rank} must be smaller than --nnodes {nnodes}.", exit_code=2)
    plan = ddp.LaunchPlan(nproc, nnodes, node_rank, master_addr, master_port, rdzv_endpoint,
                          ",".join(map(str, ids)) if ids else None)
    raise typer.Exit(ddp.launch(plan, sys.argv[1:]))


def _torch_version() -> str:
    import torch

    return torch.__version__


def _summary(trainer: Trainer, best: dict, output_dir: Path) -> None:
    rows = [("epochs", trainer.epochs), ("iterations", trainer.pos.global_step)]
    if "best_epoch" in best:
        rows += [("best hmean", f"{best['hmean']:.4f}"), ("precision", f"{best['precision']:.4f}"),
                 ("recall", f"{best['recall']:.4f}"), ("best epoch", best["best_epoch"])]
    files = [p for p in ("latest.pth", "best.pth", "config.yml", "train.log", "metrics.jsonl") if (output_dir / p).exists()]
    console.print("training finished")
    console.print(table("", ["", "value"], rows))
    console.print("Written: " + ", ".join(str(output_dir / f) for f in files))


# ---------------------------------------------------------------------------------- resume

UNSAFE_ON_RESUME = {
    "--lr": "the learning rate", "--batch-size": "the batch size", "--seed": "the seed", "--config": "the config",
    "--override": "config values", "--data-dir": "the data", "--train-label": "the data", "--weights": "the weights",
    "--amp": "mixed precision", "--no-amp": "mixed precision", "--output": "the run folder",
}


def _refuse(value, param: typer.CallbackParam):
    if value not in (None, False, [], ()):
        name = param.opts[0]
        raise UserError(f"{name} cannot change on resume: changing {UNSAFE_ON_RESUME.get(name, 'it')} would not "
                        "continue the same run. Only --epochs, --device, --workers, --eval-every and --save-every "
                        "may change. To train with other settings, start a new run: "
                        "openocr-det train --weights RUN/latest.pth ...", exit_code=2)
    return value


def _hidden(*names: str):
    return typer.Option(*names, hidden=True, callback=_refuse)


def find_checkpoint(target: Optional[Path]) -> Path:
    """RUN_DIR -> RUN_DIR/latest.pth; a file as is; nothing -> the newest latest.pth under ./output."""
    if target is None:
        runs = sorted(Path("output").glob("**/latest.pth"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise UserError("no run to resume: ./output holds no latest.pth. Pass the run folder or checkpoint, "
                            "e.g. `openocr-det resume output/det_repvit_db`.")
        return runs[-1]
    if target.is_dir():
        if not (target / "latest.pth").exists():
            raise UserError(f"{target} holds no latest.pth, so there is nothing to resume there.")
        return target / "latest.pth"
    if not target.exists():
        raise UserError(f"{target} does not exist. Pass a run folder or a latest.pth.")
    return target


def resume(
    target: Annotated[Optional[Path], typer.Argument(help="Run folder or checkpoint (default: the newest run under ./output).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Train up to this many epochs in total.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu, cuda or cuda:N.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=0, help="Data-loading worker processes.")] = None,
    eval_every: Annotated[Optional[int], typer.Option("--eval-every", min=0, help="Evaluate every N iterations.")] = None,
    save_every: Annotated[Optional[int], typer.Option("--save-every", min=0, help="Save latest.pth every N iterations.")] = None,
    gpus: GpusOpt = None,
    nproc_per_node: NprocOpt = None,
    nnodes: NnodesOpt = 1,
    node_rank: NodeRankOpt = 0,
    master_addr: MasterAddrOpt = None,
    master_port: MasterPortOpt = None,
    rdzv_endpoint: RdzvOpt = None,
    lr: Annotated[Optional[str], _hidden("--lr")] = None,
    batch_size: Annotated[Optional[str], _hidden("--batch-size")] = None,
    seed: Annotated[Optional[str], _hidden("--seed")] = None,
    config: Annotated[Optional[str], _hidden("--config")] = None,
    override: Annotated[Optional[list[str]], _hidden("--override")] = None,
    data_dir: Annotated[Optional[str], _hidden("--data-dir")] = None,
    train_label: Annotated[Optional[list[str]], _hidden("--train-label")] = None,
    weights: Annotated[Optional[str], _hidden("--weights")] = None,
    output: Annotated[Optional[str], _hidden("--output")] = None,
) -> None:
    """Continue a stopped training run exactly where it stopped.

    Restores model, optimizer, scheduler, AMP scaler, epoch, iteration, RNG states, sampler position and best metric. Also resumes OpenOCR's own latest.pth (at the next epoch, as OpenOCR does). Only --epochs, --device, --workers, --eval-every and --save-every may change.

    Examples:

      openocr-det resume

      openocr-det resume output/det_repvit_db --epochs 600 --device cuda:1
    """
    device = _launch_if_needed(gpus, nproc_per_node, nnodes, node_rank, master_addr, master_port, rdzv_endpoint, device)
    quiet_unless_main(ddp.role_from_env().is_main)
    path = find_checkpoint(target)
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict) or "state_dict" not in ckpt:
        raise UserError(f"{path} is not a training checkpoint (no config/state_dict); it cannot be resumed.")
    cfg = ckpt["config"]
    g = cfg.setdefault("Global", {})
    g["output_dir"] = str(path.parent)
    if epochs is not None:
        g["epoch_num"] = epochs
    if device is not None:
        g["device"] = device
    if workers is not None:
        cfg.setdefault("Train", {}).setdefault("loader", {})["num_workers"] = workers
    if eval_every is not None:
        g["eval_batch_step"] = [0, eval_every]
    if save_every is not None:
        g["save_iter_step"] = [0, save_every]
    console.print(f"Resuming {path} (epoch {ckpt.get('epoch')}, step {ckpt.get('global_step')})")
    run(cfg, resume=ckpt, resume_from=path.parent)
