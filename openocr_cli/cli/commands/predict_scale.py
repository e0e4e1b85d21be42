"""predict's large-run options: --resume, --overwrite, --shard I/N, --devices, --ray, --format txt|jsonl.

`LargeRun` turns them into a run: what OUTPUT already holds (inference/run_folder.py: run.json, the recorded
images, a torn last line), the detector in this process, one worker per device (inference/devices.py) or Ray
actors (integrations/ray_run.py), the
lazy input listing (data/listing.py) cut to the shard, without the images already recorded, and the writer.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from openocr_cli.cli.ui import warn
from openocr_cli.data import listing
from openocr_cli.errors import UserError
from openocr_cli.inference import run_folder as runs
from openocr_cli.inference.options import InferenceOptions
from openocr_cli.inference.results import Result


class OutputFormat(str, Enum):
    txt = "txt"
    jsonl = "jsonl"


def _shard(value: Optional[str]) -> Optional[runs.Shard]:
    if value is None:
        return None
    try:
        return runs.Shard.parse(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _devices(value: Optional[str]) -> Optional[list[str]]:
    if value is None:
        return None
    devices = [d.strip() for d in value.split(",")]
    if not devices or any(not d for d in devices):
        raise typer.BadParameter(f"'{value}' is not a comma-separated list of devices (e.g. cuda:0,cuda:1 or cpu,cpu).")
    return devices


FormatOpt = Annotated[OutputFormat, typer.Option(
    "--format", case_sensitive=False,
    help="txt: det_results.txt (path, TAB, JSON boxes; OpenOCR's format); jsonl: det_results.jsonl, one JSON object "
         "per image {image, width, height, detections, error?}. Both are written line by line.")]
Resume = Annotated[bool, typer.Option(
    "--resume", help="Continue the run recorded in OUTPUT (run.json): skip the images already written, cut a torn "
                     "last line, append the rest. Refused (exit 2) if the model or a setting differs. With nothing "
                     "recorded yet it starts the run, so one command serves the first try and every retry.")]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Start again in an OUTPUT whose recorded run did not finish, or replace results no recorded "
                        "run wrote (both refused without it).")]
ShardOpt = Annotated[Optional[str], typer.Option(
    "--shard", metavar="I/N", callback=_shard,
    help="Run only shard I of N (1-based): the I-th of N contiguous runs of the sorted input files, so a job "
         "array's N processes split one listing; `cat` of the shards' results in shard order is the unsharded file.")]
DevicesOpt = Annotated[Optional[str], typer.Option(
    "--devices", metavar="DEV,DEV", callback=_devices,
    help="One worker process per device over one input list, e.g. cuda:0,cuda:1 (cpu,cpu works too); results are "
         "written in input order to one file. Replaces --device.")]

RayOpt = Annotated[bool, typer.Option(
    "--ray", help="Run on a Ray cluster (pip install 'openocr-det\\[ray]'): Ray Data actors detect, this process "
                  "writes the results as a local run does, in input order. A local cluster is started for the run "
                  "unless --ray-address names one. CPU actors, one per CPU; --device cuda: one per GPU.")]
RayAddress = Annotated[Optional[str], typer.Option(
    "--ray-address", metavar="ADDRESS",
    help="The cluster --ray joins (implies --ray): auto (the one this machine is part of), HOST:6379, or "
         "ray://HOST:10001 (Ray Client); local starts one for the run. SRC must be at the same path on every node.")]


def ray_target(ray: bool, address: Optional[str]) -> Optional[str]:
    """--ray / --ray-address -> the address LargeRun takes ("local": a cluster for this run), None without Ray."""
    return (address or "local") if ray or address else None


class LargeRun:
    """One predict run into OUTPUT: decides fresh / resumed, loads the detector(s), lists the work.

    `stream()` yields (Result, encoded drawing or None) for every input still to do, in input order; `writer`
    writes them; `finish()` marks run.json finished. `detector` is the in-process Detector (None with several
    devices or --ray), `box_type` the predictor's. With --tile off the predictor probes the images the resize
    shrinks (Result.small_text).
    """

    def __init__(self, *, sources: list[str], recursive: bool, output: Path, vis: bool, fmt: str, resume: bool,
                 overwrite: bool, shard: Optional[runs.Shard], devices: Optional[list[str]],
                 options: InferenceOptions, extra_settings: Optional[dict] = None, ray: Optional[str] = None):
        if ray is not None and devices is not None:
            raise UserError("--devices starts workers on this machine; with --ray the cluster's actors are the "
                            "workers: --ray with --device cuda runs one actor per GPU of every node.", exit_code=2)
        if ray is not None and shard is not None:
            raise UserError("--shard splits the inputs between separate jobs; --ray spreads one run over the whole "
                            "cluster (its actors take the batches): drop --shard.", exit_code=2)
        if devices is not None and options.device is not None:
            raise UserError("--device and --devices both name devices; pass one (--devices cuda:0,cuda:1 runs a "
                            "worker per device).", exit_code=2)
        if devices is not None and len(devices) == 1:
            options, devices = options.replace(device=devices[0]), None
        listing.check_sources(sources, recursive)
        self.sources, self.recursive, self.output, self.shard, self.fmt = sources, recursive, output, shard, fmt
        self.results_path = output / runs.RESULT_NAMES[fmt]
        prior = runs.read_run(output) if output.is_dir() else None
        holds = self.results_path.is_file() and self.results_path.stat().st_size > 0
        self.resuming = resume and prior is not None
        if resume and prior is None and holds:
            raise UserError(f"cannot resume: {self.results_path} was not written by a run this version records (no "
                            f"{runs.RUN_NAME}). Choose another --output, or drop --resume to replace it.", exit_code=2)
        if not resume and prior is None and holds and not overwrite:
            raise UserError(f"{self.results_path} already exists and was not written by a recorded run (no "
                            f"{runs.RUN_NAME} beside it). Pass --overwrite to replace it, or choose another --output.",
                            exit_code=2)
        if resume and prior is None:
            warn(f"nothing recorded in {output} yet: starting the run (--resume continues it after an interruption).")
        if not resume and prior is not None and prior.get("status") != "finished" and holds and not overwrite:
            raise UserError(f"{output} holds a run that did not finish ({runs.RUN_NAME}: started "
                            f"{prior.get('started')}). Pass --resume to continue it, --overwrite to start again, or "
                            "another --output.", exit_code=2)
        self.detector = self.pool = None
        if ray is not None:
            from openocr_cli.integrations.ray_run import RayPool

            self.pool = RayPool(options, ray, vis)
            settings = self.pool.settings
            devices = [f"ray:{ray}"]
        elif devices is None:
            from openocr_cli.api.detector import Detector

            self.detector = Detector.from_options(options)
            predictor = self.detector.predictor
            if not predictor.tile.enabled:  # probe the images the resize shrinks: the warning then rests on evidence
                self.detector.predictor = predictor.replace(tile=dataclasses.replace(predictor.tile, probe=True))
            settings = self.detector.describe()
        else:
            from openocr_cli.inference.devices import DevicePool

            self.pool = DevicePool(options, devices, vis)
            settings = self.pool.settings
        self.box_type = str(settings.get("box_type", {}).get("value", "quad"))
        self.sees_every_result = ray is not None or self.detector is not None  # --save-format may run
        try:
            self._start(options, settings, prior, vis, devices, extra_settings)
        except BaseException:
            self.close()
            raise

    def _start(self, options, settings, prior, vis, devices, extra_settings) -> None:
        try:  # only once the model has loaded: a bad model leaves no output folder behind
            self.output.mkdir(parents=True, exist_ok=True)
            if vis:
                (self.output / "vis").mkdir(exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create output folder {self.output}: {exc.strerror}. Choose another --output.") \
                from None
        self.files = listing.count_files(self.sources, self.recursive) if self.shard is not None else None
        self.record = runs.run_record(
            options=options, settings=settings, sha256=runs.model_sha256(options), fmt=self.fmt,
            sources=self.sources, recursive=self.recursive, shard=self.shard,
            files=self.files, vis=vis, devices=devices or [str(settings.get("device", {}).get("value"))],
            extra=extra_settings)
        names = runs.VisNames()
        self.recorded = runs.Recorded()
        if self.resuming:
            changed = runs.differences(prior, self.record)
            if changed:
                raise UserError(f"cannot resume the run in {self.output}: it was made with other settings:\n  "
                                + "\n  ".join(changed) + "\nRun with the recorded settings, or choose another "
                                "--output.", exit_code=2)
            self.record["started"] = prior.get("started")
            self.record["resumed"] = int(prior.get("resumed", 0)) + 1
            self.recorded = runs.scan_output(self.results_path, self.fmt, names.reserve if vis else None)
            if self.recorded.torn_bytes:
                warn(f"removed a torn last line ({self.recorded.torn_bytes} bytes) from {self.results_path}; its "
                     "image runs again.")
        runs.write_run(self.output, self.record)  # before the results file is opened (a fresh run empties it)
        self.writer = runs.ResultWriter(self.output, self.fmt, vis, append=self.resuming, names=names)
        self.skipped = 0
        self._counted: list[int] = []
        if self.files is None:  # the ETA's total, counted while the first images run
            threading.Thread(target=lambda: self._counted.append(listing.count_files(self.sources, self.recursive)),
                             daemon=True, name="count inputs").start()
        self.extra_pages = 0

    @property
    def total(self) -> Optional[int]:
        """Inputs left to do for the progress bar (None until counted; a PDF counts once per page as met)."""
        files = self.files if self.files is not None else (self._counted[0] if self._counted else None)
        return None if files is None else max(files + self.extra_pages - self.recorded.images, 0)

    def _items(self) -> Iterator[str]:
        files = listing.iter_files(self.sources, self.recursive)
        if self.shard is not None:
            files = self.shard.select(files, self.files)
        for item in listing.expand_pages(files, unique=len(self.sources) > 1):
            if "#page=" in item and not item.endswith("#page=1"):
                self.extra_pages += 1
            if self.recorded.images and self.recorded.has(item):
                self.skipped += 1
                continue
            yield item

    def stream(self, keep_maps: bool = False) -> Iterator[tuple[Result, Optional[bytes]]]:
        if self.pool is not None:
            if keep_maps:
                raise UserError("this option needs the probability maps, which --devices and --ray workers do not send "
                                "back; run it with --device.", exit_code=2)
            yield from self.pool.stream(self._items())
            return
        for result in self.detector.stream(self._items(), keep_images=self.writer.vis_dir is not None,
                                           return_maps=keep_maps, on_error="skip"):
            yield result, None

    def finish(self, ok: int, failed: int) -> None:
        """run.json: finished, with the images the results file holds and the unreadable ones."""
        lines = self.recorded.images + ok + (failed if self.fmt == "jsonl" else 0)
        self.record.update(status="finished", images=lines, failed=failed + len(self.recorded.errors),
                           skipped=self.skipped, finished=runs.now())
        runs.write_run(self.output, self.record)

    def close(self) -> None:
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.close()
        if self.pool is not None:
            self.pool.close()

    def __enter__(self) -> LargeRun:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
