"""torchrun, run as the child `train --nproc-per-node` starts: tied to our process's life, and tying its workers
to its own (parent_death.py), then torch.distributed.run with the arguments given.

    python -m openocr_cli.training.torchrun_child <torchrun arguments> -m openocr_cli train ...
"""

from __future__ import annotations

import os
import runpy
import sys

from openocr_cli.training.parent_death import end_with_parent, expected_parent

LAUNCHER_PID_ENV = "OPENOCR_DET_LAUNCHER_PID"  # our CLI's pid, set by distributed.launch
AGENT_PID_ENV = "OPENOCR_DET_AGENT_PID"  # this process's pid, for the workers it starts


def main() -> None:
    end_with_parent(expected_parent(LAUNCHER_PID_ENV))
    os.environ[AGENT_PID_ENV] = str(os.getpid())
    sys.argv[0] = "torchrun"
    runpy.run_module("torch.distributed.run", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
