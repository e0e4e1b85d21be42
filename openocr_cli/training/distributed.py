"""Distributed training on PyTorch's own launcher (torch.distributed.run): we launch it and cooperate with it.

Roles are read from the launcher's environment (RANK / LOCAL_RANK / WORLD_SIZE), never guessed
from the number of visible GPUs as OpenOCR does (docs/openocr-compat.md). NCCL on CUDA, gloo on CPU, with a long
process-group timeout so a long evaluation cannot trip it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist

from openocr_cli.errors import UserError
from openocr_cli.training.parent_death import end_with_parent, expected_parent
from openocr_cli.training.torchrun_child import AGENT_PID_ENV, LAUNCHER_PID_ENV

PROCESS_GROUP_TIMEOUT = timedelta(hours=2)
LAUNCHER_FLAGS = {"--gpus": 1, "--nproc-per-node": 1, "--nnodes": 1, "--node-rank": 1, "--master-addr": 1,
                  "--master-port": 1, "--rdzv-endpoint": 1}


@dataclass(frozen=True)
class Role:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def role_from_env() -> Role:
    env = os.environ
    return Role(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))


def under_launcher() -> bool:
    """True inside a torchrun worker (the launcher sets these for every process it starts)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(role: Role, device: torch.device) -> torch.device:
    """Join the process group; each CUDA worker takes cuda:LOCAL_RANK of its visible devices. A worker of a
    launcher stops (as on SIGTERM) when the launcher dies, rather than train on alone."""
    if under_launcher() and launched_by_us():
        end_with_parent(expected_parent(AGENT_PID_ENV))
    if device.type == "cuda":
        device = torch.device("cuda", role.local_rank)
        torch.cuda.set_device(device)
    if role.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=PROCESS_GROUP_TIMEOUT,
                                rank=role.rank, world_size=role.world_size)
    return device


def shutdown(wait_for_all: bool = False) -> None:
    """Leave the process group. After an end every rank reached together (finished, or stopped at
    the same step), wait for the others first: rank 0 may still be saving, and a rank tearing down
    its connections while another still holds them can make gloo abort the process. After an error
    on this rank, leave at once (the others may never arrive)."""
    if not dist.is_initialized():
        return
    if wait_for_all:
        with contextlib.suppress(RuntimeError):  # a rank that died meanwhile: leave anyway
            dist.barrier()
    dist.destroy_process_group()


def any_rank(flags: list[bool], role: Role, device: torch.device) -> list[bool]:
    """Each flag true on every rank if it is true on at least one (so all ranks stop at the same step)."""
    if not role.distributed:
        return list(flags)
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v > 0) for v in t.tolist()]


def gather_objects(obj: Any, role: Role) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not role.distributed:
        return [obj]
    out: list = [None] * role.world_size
    dist.all_gather_object(out, obj)
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_gpus(text: Optional[str]) -> list[int]:
    if text is None or text.strip() == "":
        return []
    try:
        ids = [int(part) for part in text.split(",") if part.strip() != ""]
    except ValueError:
        raise UserError(f"--gpus '{text}' must be a comma-separated list of device numbers, e.g. --gpus 0,1,2,3.",
                        exit_code=2) from None
    if len(set(ids)) != len(ids) or any(i < 0 for i in ids):
        raise UserError(f"--gpus '{text}' names a device twice or a negative number.", exit_code=2)
    return ids


def strip_launcher_flags(argv: Sequence[str]) -> list[str]:
    """The command line minus the flags only the launcher needs (workers must not launch again)."""
    out, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
            continue
        name = arg.split("=", 1)[0]
        if name in LAUNCHER_FLAGS:
            skip = 0 if "=" in arg else LAUNCHER_FLAGS[name]
            continue
        out.append(arg)
    return out


@dataclass
class LaunchPlan:
    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: Optional[str] = None
    master_port: Optional[int] = None
    rdzv_endpoint: Optional[str] = None
    visible_devices: Optional[str] = None

    def launcher_args(self) -> list[str]:
        args = ["--nproc-per-node", str(self.nproc_per_node)]
        if self.nnodes == 1 and not self.master_addr and not self.rdzv_endpoint:
            return args + ["--standalone"] if self.master_port is None else args + [
                "--master-addr", "127.0.0.1", "--master-port", str(self.master_port)]
        args += ["--nnodes", str(self.nnodes), "--node-rank", str(self.node_rank)]
        if self.rdzv_endpoint:
            return args + ["--rdzv-backend", "c10d", "--rdzv-endpoint", self.rdzv_endpoint]
        return args + ["--master-addr", self.master_addr or "127.0.0.1",
                       "--master-port", str(self.master_port or 29500)]


LAUNCHED_ENV = "OPENOCR_DET_LAUNCHED"


def launched_by_us() -> bool:
    return os.environ.get(LAUNCHED_ENV) == "1"


def _children(pid: int) -> list[int]:
    """Direct child processes of `pid` (Linux /proc); empty where /proc is not available."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def launch(plan: LaunchPlan, command_argv: Sequence[str], env: Optional[dict] = None) -> int:
    """Run `python -m torch.distributed.run <plan> -m openocr_cli <argv>`; return the launcher's exit code.

    The launcher runs in its own session, so a Ctrl-C reaches only this process, which passes it to
    the workers: they finish their step together, rank 0 saves latest.pth, they exit cleanly and
    the launcher shuts down without a traceback. The command then exits 130. Killed hard, this process takes
    the launcher and its workers with it (parent_death.py).
    """
    env = dict(os.environ, **(env or {}), **{LAUNCHED_ENV: "1", LAUNCHER_PID_ENV: str(os.getpid())})
    if plan.visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = plan.visible_devices
    cmd = [sys.executable, "-m", "openocr_cli.training.torchrun_child", *plan.launcher_args(), "-m", "openocr_cli",
           *strip_launcher_flags(command_argv)]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    interrupted = False

    def forward(signum, frame):
        nonlocal interrupted
        interrupted = True
        workers = _children(proc.pid)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
        if not workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 130 if interrupted and code == 0 else code


def plan_launch(gpus: Optional[str], nproc_per_node: Optional[int], nnodes: int, node_rank: int,
                master_addr: Optional[str], master_port: Optional[int], rdzv_endpoint: Optional[str],
                device: Optional[str]) -> tuple[Optional[LaunchPlan], Optional[str]]:
    """(how to launch the workers or None for one process here, the device this process uses).

    `--gpus 0` alone means cuda:0 in this process. Inside a torchrun worker there is nothing to
    launch: the launcher already did its job. Flag conflicts are usage errors (exit 2).
    """
    ids = parse_gpus(gpus)
    if ids and device is not None and not device.startswith(("cuda", "gpu")):
        raise UserError(f"--gpus asks for CUDA devices but --device is {device}; drop one of them.", exit_code=2)
    if under_launcher():
        return None, device
    nproc = nproc_per_node or max(len(ids), 1)
    if ids and nproc_per_node and nproc_per_node != len(ids):
        raise UserError(f"--gpus names {len(ids)} device(s) but --nproc-per-node is {nproc_per_node}.", exit_code=2)
    cpus = os.cpu_count() or 1
    if nproc > cpus:  # each process computes on at least one core, and holds the model and its loader
        raise UserError(f"--nproc-per-node {nproc} is more processes than this machine has CPUs ({cpus}); use at "
                        f"most {cpus} (one per GPU, or one per core with --device cpu).", exit_code=2)
    if nproc == 1 and nnodes == 1:
        return None, (f"cuda:{ids[0]}" if ids else device)
    if node_rank >= nnodes:
        raise UserError(f"--node-rank {node_rank} must be smaller than --nnodes {nnodes}.", exit_code=2)
    plan = LaunchPlan(nproc, nnodes, node_rank, master_addr, master_port, rdzv_endpoint,
                      ",".join(map(str, ids)) if ids else None)
    return plan, device
