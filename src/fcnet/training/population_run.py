"""Several compatible runs trained as one population: a ``Solver`` of K models through
``train_numpy``, or a ``TorchPopulation``.  Compatible: every field but ``FREE`` equal (none
changes an array shape); torch members also need a normal init and the ``STACKED`` settings.
Each member's run directory equals its lone run's.  Not checkpointed: killed, it trains again."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from fcnet.config import RunConfig
from fcnet.errors import FcnetError
from fcnet.training import rundir, torch_run
from fcnet.training.memory import check_fits
from fcnet.training.prepare import Prepared, prepare
from fcnet.training.run import train_numpy, train_run
from fcnet.training.tensorboard import RunLogger

FREE = {"lr", "decay", "reg", "dropout_keep", "std", "init", "seed"}
# what torch's stacked SGD step trains: these fields at these values
STACKED = {"optimizer": "sgd", "batchnorm": False, "activation": "relu", "augment": False, "mixup": 0.0,
           "ema": 0.0, "label_smoothing": 0.0, "weight_decay": None, "keep_best": False, "time_budget": None}


def population_key(config: RunConfig) -> tuple:
    """Configs with equal keys can train together (either backend)."""
    return tuple((k, str(v)) for k, v in sorted(config.model_dump().items()) if k not in FREE)


def compatible(configs: list[RunConfig]) -> bool:
    """Whether these configs can train as one population: the one definition sweeps use."""
    if configs and all(c.backend == "torch" for c in configs):
        ok = all(c.init.split(":")[0] == "normal" and c.hidden
                 and all(getattr(c, k) == v for k, v in STACKED.items()) for c in configs)
    else:
        ok = all(c.backend == "numpy" and not c.keep_best for c in configs)
    return bool(configs) and ok and len({population_key(c) for c in configs}) == 1


def train_population(configs: list[RunConfig], run_dirs: list[Path], quiet: bool = True, resume: bool = True,
                     eval_at: list[int] | None = None, figures: bool = True) -> list[dict]:
    """Train compatible runs at once; returns their summaries in order.  Finished runs
    are reused; incompatible lists fall back to one run at a time."""
    torch = bool(configs) and configs[0].backend == "torch"
    if len(configs) != len(run_dirs):
        raise FcnetError("train_population needs one run directory per config")
    eval_at, together = list(eval_at or []), compatible(configs)
    out = [rundir.finished(d, c, eval_at) if together else None for c, d in zip(configs, run_dirs)]
    todo = [i for i, s in enumerate(out) if s is None]
    todo_configs, todo_dirs = [configs[i] for i in todo], [Path(run_dirs[i]) for i in todo]
    done: list[dict] = []
    if not together or (len(todo) == 1 and not (torch and eval_at)):  # torch alone cannot eval_at
        done = [train_run(c, d, quiet=quiet, resume=resume, eval_at=eval_at, figures=figures)
                for c, d in zip(todo_configs, todo_dirs)]
    elif todo:
        with ExitStack() as held:  # one writer per run directory, as for a lone run
            for c, d in zip(todo_configs, todo_dirs, strict=True):
                held.enter_context(rundir.locked(d, c))
            P = prepare(todo_configs[0], progress=not quiet)
            if torch:
                done = _train_torch_members(todo_configs, todo_dirs, P, eval_at, figures)
            else:
                check_fits(todo_configs[0], *P.X_train.shape, len(P.classes),
                           members=len(todo_configs))  # before allocating
                done = train_numpy(todo_configs, todo_dirs, P, quiet=quiet, eval_at=eval_at, figures=figures)
    for i, s in zip(todo, done, strict=True):
        out[i] = s
    return out  # type: ignore[return-value]


def _train_torch_members(configs: list[RunConfig], run_dirs: list[Path], P: Prepared,
                         eval_at: list[int], figures: bool) -> list[dict]:
    """One ``TorchPopulation``; each member then finished as its lone run (``train_torch``)."""
    import torch

    from fcnet.torch_backend.population import TorchPopulation

    summaries = [rundir.start(d, c, P, population=len(configs)) for c, d in zip(configs, run_dirs)]
    pop = TorchPopulation(configs, P.X_train.shape[1], len(P.classes))
    outs = pop.run(P.X_train, P.y_train, P.X_val, P.y_val, eval_at=eval_at)
    done = []
    for j, (c, d, s, out) in enumerate(zip(configs, run_dirs, summaries, outs, strict=True)):
        t = torch_run.trainer(c, P)  # member j as a lone run's trainer, to finish as one
        with torch.no_grad():
            p = pop.member_params(j)
            for lin, w, b in zip(t.model.linears, p[::2], p[1::2], strict=True):
                lin.weight.copy_(w.T)
                lin.bias.copy_(b)
        t.hist, t.it, t.epoch, t.diverged = [pop.hist[j]], pop.it, pop.epoch, [pop.diverged[j]]
        out["train_seconds"] /= len(configs)
        # total_steps spaces the logged points (about 100 a run), as for a lone run
        tb = RunLogger.open(d, enabled=c.tensorboard, total_steps=len(out["loss_history"]))
        tb.losses(0, out["loss_history"])
        done.append(torch_run.finish_torch(c, d, t, P, out, s, tb, figures))
    return done
