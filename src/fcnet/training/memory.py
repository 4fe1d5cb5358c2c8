"""Will a run fit in memory?  Checked before anything big is allocated, so a run that cannot
fit ends in one line, not a MemoryError half-way or the OOM killer.  Available: ``RLIMIT_AS``
(``ulimit -v``) less what is mapped (the data included), else ``MemAvailable``."""

from __future__ import annotations

import contextlib
import os
import resource

from fcnet.config import RunConfig
from fcnet.errors import FcnetError
from fcnet.nn.optim import rule

EVAL_CHUNK = 8192  # rows scored at once when evaluating (training/run.py's _accuracy)


def estimate(config: RunConfig, input_size: int, num_classes: int) -> int:
    """Bytes a run needs beyond its data, generously (both engines): the parameters ``copies``
    times (weights, gradients, optimiser slots, keep_best, ema, a checkpoint being written),
    and a batch's and an ``EVAL_CHUNK``'s activations, gradients and scores."""
    sizes = [int(input_size), *(int(h) for h in config.hidden), int(num_classes)]
    n_params = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    copies = 2 + len(rule(config.optimizer).slots) + int(config.keep_best) + int(config.ema > 0) + 1
    per_row = sizes[0] + 3 * sum(sizes[1:-1]) + 3 * sizes[-1]
    rows = config.batch_size + EVAL_CHUNK  # a batch, and an evaluation chunk beside it
    itemsize = 8 if config.dtype == "float64" else 4
    return itemsize * (copies * n_params + rows * per_row)


def _proc_bytes(path: str, field: str) -> int | None:
    """A ``field: N kB`` line of /proc's ``path`` in bytes; None when it cannot be read."""
    with contextlib.suppress(OSError, ValueError, IndexError, StopIteration), open(path) as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(f"{field}:"))
    return None


def available() -> tuple[int | None, str]:
    """(bytes this process may still allocate or None, where the figure comes from)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        mapped = _proc_bytes("/proc/self/status", "VmSize") or 0
        return max(soft - mapped, 0), f"of the {_gb(soft)} address-space limit (RLIMIT_AS)"
    if (free := _proc_bytes("/proc/meminfo", "MemAvailable")) is not None:
        return free, "of memory available on this machine"
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "of free memory"
    except (ValueError, OSError):
        return None, ""


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def check_fits(config: RunConfig, n_rows: int, input_size: int, num_classes: int, members: int = 1) -> int:
    """Refuse (FcnetError, one line) a run that cannot fit; returns the estimate in bytes.
    ``members``: a population of that many nets of ``config``'s shapes trained at once."""
    need = members * estimate(config, input_size, num_classes)
    free, where = available()
    if free is not None and need > free:
        what = "this run needs" if members == 1 else f"this population of {members} needs"
        raise FcnetError(f"{what} about {_gb(need)} of memory (hidden {config.hidden}, batch "
                         f"{config.batch_size}, {input_size} inputs, {n_rows} training rows, {config.dtype}) "
                         f"but {_gb(free)} is left {where}: use a smaller --hidden or --batch-size")
    return need
