"""Several compatible runs trained as one population: a ``Solver`` of K models through
the one NumPy loop ``fcnet.training.run.train_numpy``, or a torch ``TorchPopulation``.

Compatible: the same data, architecture, batch size, length, sampling, schedule and
update rule; they may differ in lr, decay, reg, dropout keep, init and seed (members
with their own seed draw their own minibatches: a study cell's repeats).  Each member
gets its own complete run directory, laid out as a lone run's.  A population is not
checkpointed mid-way: killed, its unfinished members simply train again.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from fcnet.config import RunConfig
from fcnet.errors import FcnetError
from fcnet.training import rundir, torch_population
from fcnet.training.memory import check_fits
from fcnet.training.prepare import prepare
from fcnet.training.run import read_run_config, train_numpy, train_run

# configs with equal keys can train together: all fields but those that change no array
# shape or batch stream (torch_population.FREE), the same for both backends
population_key = torch_population.population_key


def compatible(configs: list[RunConfig]) -> bool:
    """Whether these configs can train as one population: the one definition sweeps use."""
    if configs and all(c.backend == "torch" for c in configs):
        return torch_population.compatible(configs)
    return (all(c.backend == "numpy" and not c.keep_best for c in configs)
            and len({population_key(c) for c in configs}) == 1)


def train_population(configs: list[RunConfig], run_dirs: list[Path], quiet: bool = True,
                     resume: bool = True, eval_at: list[int] | None = None,
                     figures: bool = True) -> list[dict]:
    """Train compatible runs at once; returns their summaries in order.  Finished runs
    are reused; incompatible lists fall back to one run at a time."""
    torch = bool(configs) and configs[0].backend == "torch"
    if len(configs) != len(run_dirs):
        raise FcnetError("train_population needs one run directory per config")
    eval_at = list(eval_at or [])
    if not compatible(configs):
        return [train_run(c, d, quiet=quiet, resume=resume, eval_at=eval_at, figures=figures)
                for c, d in zip(configs, run_dirs)]
    out: list[dict | None] = []
    for c, d in zip(configs, map(Path, run_dirs)):
        if (d / "config.toml").exists() and read_run_config(d) != c:
            raise FcnetError(f"{d}: holds a run with a different config")
        out.append(rundir.finished(d, c, eval_at))
    todo = [i for i, s in enumerate(out) if s is None]
    if len(todo) == 1 and not (torch and eval_at):  # lone torch runs cannot evaluate along the way
        i = todo[0]
        out[i] = train_run(configs[i], run_dirs[i], quiet=quiet, resume=resume, eval_at=eval_at,
                           figures=figures)
    elif todo:
        todo_configs, todo_dirs = [configs[i] for i in todo], [Path(run_dirs[i]) for i in todo]
        with ExitStack() as held:  # one writer per run directory, as for a lone run
            for c, d in zip(todo_configs, todo_dirs, strict=True):
                held.enter_context(rundir.locked(d, c))
            if torch:
                done = torch_population.train_members(configs=todo_configs, run_dirs=todo_dirs,
                                                      quiet=quiet, eval_at=eval_at, figures=figures)
            else:
                P = prepare(todo_configs[0], progress=not quiet)
                check_fits(todo_configs[0], *P.X_train.shape, len(P.classes),
                           members=len(todo_configs))  # before allocating
                done = train_numpy(todo_configs, todo_dirs, P, quiet=quiet, eval_at=eval_at,
                                   figures=figures)
        for i, s in zip(todo, done, strict=True):
            out[i] = s
    return out  # type: ignore[return-value]
