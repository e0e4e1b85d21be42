"""`openocr-det train` and `openocr-det resume`: the command lines and their display.

The work is api.training's train() / resume(), the functions Python callers use; the command adds the
rich display through the run's callbacks, and launches torchrun for multi-process runs.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from openocr_cli.cli import options as opt
from openocr_cli.cli.ui import console, quiet_unless_main, table
from openocr_cli.errors import UserError
from openocr_cli.training.options import TrainOptions, option_names
from openocr_cli.training.settings import RESUME_FLAGS, TrainSettings

if TYPE_CHECKING:  # torch is imported by the commands that run, not by `--help`
    from openocr_cli.training.callbacks import Callback
    from openocr_cli.training.distributed import LaunchPlan
    from openocr_cli.training.jobs import TrainResult
    from openocr_cli.training.run_data import RunData

GpusOpt = Annotated[Optional[str], typer.Option(
    "--gpus", help="CUDA devices, e.g. 0,1,2,3: one process per device under torchrun (DDP).")]
NprocOpt = Annotated[Optional[int], typer.Option(
    "--nproc-per-node", min=1, help="Processes on this machine (with --device cpu: gloo DDP on CPU).")]
NnodesOpt = Annotated[int, typer.Option("--nnodes", min=1, help="Number of machines (multi-node training).")]
NodeRankOpt = Annotated[int, typer.Option("--node-rank", min=0, help="This machine's rank among --nnodes.")]
MasterAddrOpt = Annotated[Optional[str], typer.Option("--master-addr", help="Address of the rank-0 machine.")]
MasterPortOpt = Annotated[Optional[int], typer.Option(
    "--master-port", min=1, max=65535, help="Port of the rank-0 machine.")]
RdzvOpt = Annotated[Optional[str], typer.Option(
    "--rdzv-endpoint", help="host:port of a c10d rendezvous (instead of --master-addr/--master-port).")]


@opt.options_command(TrainOptions, option_names())
def train(
    options: TrainOptions,
    gpus: GpusOpt = None,
    nproc_per_node: NprocOpt = None,
    nnodes: NnodesOpt = 1,
    node_rank: NodeRankOpt = 0,
    master_addr: MasterAddrOpt = None,
    master_port: MasterPortOpt = None,
    rdzv_endpoint: RdzvOpt = None,
) -> None:
    """Fine-tune the detector on ICDAR/PaddleOCR-format data.

    Defaults follow OpenOCR's repvit_db.yml: data in ./icdar2015/text_localization/, the released weights as \
the starting point, Adam with cosine schedule. The run folder gets latest.pth, best.pth, config.yml, train.log \
and metrics.jsonl; Ctrl-C saves latest.pth and prints the resume command. Global.checkpoints in the config \
resumes from that checkpoint, as in OpenOCR.

    Examples:

      openocr-det train --data-dir data --train-label data/train.txt --eval-label data/test.txt --epochs 50

      openocr-det train --weights none --device cpu --batch-size 4 -o Global.print_batch_step=10
    """
    from openocr_cli.api import training
    from openocr_cli.training.allocator import keep_freed_memory

    keep_freed_memory()  # no page faults for every step's buffers (training/allocator.py)
    from openocr_cli.training import distributed as ddp
    from openocr_cli.training import jobs

    plan, device = ddp.plan_launch(gpus, nproc_per_node, nnodes, node_rank, master_addr, master_port,
                                   rdzv_endpoint, options.device)
    options = options.replace(device=device)
    screen = _screen()
    if plan is not None:
        job = jobs.plan_train(options)
        raise typer.Exit(_launch(plan, job.settings, jobs.load_job_data(job, [screen])))
    _finish(lambda: training.train(**options.values(), callbacks=[screen]))


def _screen() -> Callback:
    """The command's display of a run: the data check, the live training display, the DDP line."""
    from openocr_cli.cli.commands.check_data import print_report
    from openocr_cli.cli.training_display import TrainDisplay

    class RunScreen(TrainDisplay):
        role = None

        def checking_data(self):
            return console.status("checking the training labels and images ...")

        def on_data_checked(self, report) -> None:
            print_report(report, problems=False, warnings=False)  # train logs the warnings and lists the problems

        def on_resume(self, checkpoint: Path, ckpt: dict) -> None:
            console.print(f"Resuming {checkpoint} (epoch {ckpt.get('epoch')}, step {ckpt.get('global_step')})")

        def on_run_start(self, settings: TrainSettings, role) -> None:
            quiet_unless_main(role.is_main)
            self.role, self.started = role, time.perf_counter()
            if settings.ignored:
                listed = ", ".join(settings.ignored)
                console.print(f"[dim]ignored config keys (no effect in openocr-det): {listed}[/dim]")

        @contextlib.contextmanager
        def running(self, trainer):
            role, settings = self.role, trainer.settings
            if role is not None and role.distributed:
                batch = settings.batch_size
                scaled = f" (--scale-lr: {settings.optimizer['lr']:g} x {role.world_size})" if settings.scale_lr else ""
                console.print(f"DDP: world size {role.world_size} ({trainer.device.type}), batch {batch} per process, "
                              f"effective batch {batch * role.world_size}, learning rate {trainer.lr:g}{scaled}")
            with self.live(trainer):
                yield

    return RunScreen(console)


def _launch(plan: LaunchPlan, settings: TrainSettings, data: RunData) -> int:
    """Hand the validated data to the workers of a distributed launch and wait for them (they run the
    command again, without the launcher flags, and train through the same functions); their exit code."""
    from openocr_cli.training import distributed as ddp
    from openocr_cli.training.run_data import VALIDATED_ENV

    handed = data.save(settings.output_dir)
    # torchrun's own parser takes `--log` for an ambiguous abbreviation of its --log-dir/--logs-specs: the
    # workers get the option's other name
    argv = ["--tracker" + arg[5:] if arg == "--log" or arg.startswith("--log=") else arg for arg in sys.argv[1:]]
    try:
        return ddp.launch(plan, argv, env={VALIDATED_ENV: str(handed.resolve())})
    finally:
        handed.unlink(missing_ok=True)


def _finish(run: Callable[[], TrainResult]) -> None:
    """Train, then show how the run ended; Ctrl-C ends with the resume command."""
    from openocr_cli.training import distributed as ddp
    from openocr_cli.training.trainer import TrainingInterrupted

    try:
        result = run()
    except TrainingInterrupted as stop:
        console.print(f"[yellow]Stopped after iteration {stop.state.global_step}; saved {stop.checkpoint}."
                      f"[/yellow]\nResume with: openocr-det resume {shlex.quote(str(stop.checkpoint.parent))}")
        # under our own launcher a clean exit lets torchrun stop quietly; the launching command exits 130
        raise typer.Exit(0 if ddp.launched_by_us() else 130) from None
    if result.already_finished:
        _already_finished(result)
    else:
        _summary(result)


def _already_finished(result: TrainResult) -> None:
    run, epochs = result.run_dir, result.epochs
    best = f"best hmean {result.best_hmean:.4f}"
    if result.stopped:
        console.print(f"Training already finished: {result.stopped}. To continue: "
                      f"openocr-det resume {shlex.quote(str(run))} --patience N (more than {result.stale_evals}, "
                      "or 0 to turn early stopping off)")
        return
    console.print(f"Training already finished: {epochs} of {epochs} epochs done ({best}). To train longer: "
                  f"openocr-det resume {shlex.quote(str(run))} --epochs N")


def _summary(result: TrainResult) -> None:
    best, output_dir = result.metrics, result.run_dir
    rows = [("epochs", result.epochs), ("iterations", result.global_step)]
    if result.stopped:
        rows.append(("stopped", result.stopped))
    if best.get("best_epoch"):
        rows += [("best hmean", f"{best['hmean']:.4f}"), ("precision", f"{best['precision']:.4f}"),
                 ("recall", f"{best['recall']:.4f}"), ("best epoch", best["best_epoch"])]
    names = ("latest.pth", "best.pth", "config.yml", "train.log", "metrics.jsonl", "results.png", "tensorboard")
    files = [p for p in names if (output_dir / p).exists()]
    console.print("training finished (early stop)" if result.stopped else "training finished")
    console.print(table("", ["", "value"], rows))
    if best.get("best_epoch") == 0:
        console.print(f"[yellow]fine-tuning did not improve on the starting weights: hmean {best['hmean']:.4f} "
                      "(no best.pth was written; the starting weights remain the best model).[/yellow]")
    console.print("Written: " + ", ".join(str(output_dir / f) for f in files))


# ---------------------------------------------------------------------------------- resume

UNSAFE_ON_RESUME = {
    "--lr": "the learning rate", "--batch-size": "the batch size", "--seed": "the seed", "--config": "the config",
    "--override": "config values", "--data-dir": "the data", "--train-label": "the data", "--weights": "the weights",
    "--amp": "mixed precision", "--no-amp": "mixed precision", "--output": "the run folder",
    "--scale-lr": "the learning rate",
}


def _refuse(value, param: typer.CallbackParam):
    if value not in (None, False, [], ()):
        name = param.opts[0]
        allowed = ", ".join("--" + flag.replace("_", "-") for flag in RESUME_FLAGS)
        raise UserError(f"{name} cannot change on resume: changing {UNSAFE_ON_RESUME.get(name, 'it')} would not "
                        f"continue the same run. Only {allowed} may change. To train with other settings, start a "
                        "new run: openocr-det train --weights RUN/latest.pth ...", exit_code=2)
    return value


def _hidden(*names: str):
    return typer.Option(*names, hidden=True, callback=_refuse)


@opt.options_command(TrainOptions, RESUME_FLAGS)
def resume(
    target: Annotated[Optional[Path], typer.Argument(
        help="Run folder or checkpoint (default: the newest run under ./output).")] = None,
    options: TrainOptions = None,
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
    scale_lr: Annotated[bool, _hidden("--scale-lr")] = False,
) -> None:
    """Continue a stopped training run exactly where it stopped.

    Restores model, optimizer, scheduler, AMP scaler, epoch, iteration, RNG states, sampler position and best \
metric. Also resumes OpenOCR's own latest.pth (at the next epoch, as OpenOCR does). Only --epochs, --device, \
--workers, --eval-every, --save-every, --patience, --min-delta and --cache may change, and --log may add a \
tracker (the run's own go on logging to the same TensorBoard folder and MLflow run); a run that stopped early \
continues when --patience allows it.

    Examples:

      openocr-det resume

      openocr-det resume output/det_repvit_db --epochs 600 --device cuda:1
    """
    from openocr_cli.api import training
    from openocr_cli.training.allocator import keep_freed_memory

    keep_freed_memory()  # no page faults for every step's buffers (training/allocator.py)
    from openocr_cli.training import distributed as ddp
    from openocr_cli.training import jobs

    plan, device = ddp.plan_launch(gpus, nproc_per_node, nnodes, node_rank, master_addr, master_port,
                                   rdzv_endpoint, options.device)
    options = options.replace(device=device)
    quiet_unless_main(ddp.role_from_env().is_main)
    screen = _screen()
    if plan is not None:
        job = jobs.plan_resume(target, options)
        raise typer.Exit(_launch(plan, job.settings, jobs.load_job_data(job, [screen])))
    _finish(lambda: training.resume(target, **options.values(RESUME_FLAGS), callbacks=[screen]))
