"""OpenMP wait policy for training, set before PyTorch loads (this module must not import torch).

PyTorch's OpenMP threads spin at every barrier by default. A training process shares its cores with its
own loader workers (and on shared machines with other jobs): a spinning thread then burns the slice its
descheduled peer needs, and a step can take several times longer (measured here: 2 threads on 2 busy
cores ran a fixed set of training steps 3.7x slower than with passive waiting). Passive waiting costs a
futex wake per parallel region instead. A value the user set is kept.
"""

from __future__ import annotations

import os
import sys


def prefer_passive_waits() -> None:
    """OMP_WAIT_POLICY=PASSIVE unless already set; no effect once torch (libgomp) is loaded."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
