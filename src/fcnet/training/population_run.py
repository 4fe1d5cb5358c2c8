"""Several compatible runs trained as one population (fcnet.nn.population).

Compatible: the same data, architecture, batch size, length, sampling and
seed, NumPy backend with plain SGD; they may differ in lr, decay, reg,
dropout keep and init scale.  Each member still gets its own complete run
directory, identical in layout to a lone run's.  A population is not
checkpointed mid-way: killed, its unfinished members simply train again.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fcnet.config import RunConfig
from fcnet.errors import FcnetError
from fcnet.nn.population import PopulationSolver
from fcnet.training import rundir, torch_population
from fcnet.training.prepare import data_key, prepare
from fcnet.training.run import (
    blas_threads,
    build_model,
    finish_run,
    num_iterations,
    read_run_config,
    train_run,
)
from fcnet.training.tensorboard import RunLogger, weight_matrices

# fields members may differ in: none of them changes an array shape or the batch stream
FREE = {"lr", "decay", "reg", "dropout_keep", "std", "init"}


def population_key(config: RunConfig) -> tuple:
    """Configs with equal keys can train together (torch: the torch population's key)."""
    if config.backend == "torch":
        return torch_population.population_key(config)
    d = config.model_dump()
    return tuple((k, str(v)) for k, v in sorted(d.items()) if k not in FREE)


def compatible(configs: list[RunConfig]) -> bool:
    """Whether these configs can train as one population: the one definition sweeps use."""
    if configs and all(c.backend == "torch" for c in configs):
        return torch_population.compatible(configs)
    return (all(c.backend == "numpy" and c.optimizer == "sgd" and not c.keep_best
                for c in configs)
            and len({population_key(c) for c in configs}) == 1)


def train_population(configs: list[RunConfig], run_dirs: list[Path], quiet: bool = True,
                     resume: bool = True, eval_at: list[int] | None = None,
                     figures: bool = True) -> list[dict]:
    """Train compatible runs at once; returns their summaries in order.

    Finished runs are reused; incompatible lists fall back to one run at a time.
    Torch configs train as a ``TorchPopulation`` (fcnet.training.torch_population).
    """
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
        train = torch_population.train_members if torch else _train
        for i, s in zip(todo, train(configs=[configs[i] for i in todo],
                                     run_dirs=[Path(run_dirs[i]) for i in todo],
                                     quiet=quiet, eval_at=eval_at, figures=figures)):
            out[i] = s
    return out  # type: ignore[return-value]


def _train(configs: list[RunConfig], run_dirs: list[Path], quiet: bool, eval_at: list[int],
           figures: bool) -> list[dict]:
    c0 = configs[0]
    assert len({data_key(c) for c in configs}) == 1
    P = prepare(c0, progress=not quiet)
    C = len(P.classes)
    models = [build_model(c, P.X_train.shape[1], C) for c in configs]
    n_iters = num_iterations(c0, P.X_train.shape[0])
    summaries = []
    for c, d in zip(configs, run_dirs):
        summaries.append(rundir.start(d, c, P, population=len(configs)))
    wanted = set(eval_at)
    val_at: list[dict[str, float]] = [{} for _ in configs]
    tbs = [RunLogger.open(d, enabled=c.tensorboard) for c, d in zip(configs, run_dirs)]

    def callback(pop: PopulationSolver, event: str) -> None:
        if event == "epoch":
            for j in np.flatnonzero(pop.active):
                e = len(pop.val_acc_history[j]) - 1
                tbs[j].epoch(e * pop.iters_per_epoch, pop.train_acc_history[j][-1],
                             pop.val_acc_history[j][-1], pop.lr_history[j][-1],
                             # views of the member's slice, current
                             weights=lambda j=j: weight_matrices(models[j].params),
                             image_shape=P.image_shape,
                             last=pop.it + pop.iters_per_epoch > pop.num_iters)
        if event == "iter" and pop.it in wanted:
            accs = pop.val_accuracies()
            for j in range(pop.k):
                if pop.diverged_at[j] is None:
                    val_at[j][str(pop.it)] = float(accs[j])

    pop = PopulationSolver(models, P.X_train, P.y_train, P.X_val, P.y_val,
                           learning_rates=[c.lr for c in configs],
                           decays=[c.decay for c in configs], regs=[c.reg for c in configs],
                           dropout_keeps=[c.dropout_keep for c in configs], num_iters=n_iters,
                           batch_size=c0.batch_size, seed=c0.seed, sampling=c0.sampling,
                           callback=callback)
    t0 = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore"), blas_threads(c0, P):
        pop.run()
        seconds = time.perf_counter() - t0
        out = []
        for j, (c, d, m, s) in enumerate(zip(configs, run_dirs, models, summaries)):
            hist = pop.history(j)
            its = len(hist["loss_history"])
            tbs[j].losses(0, hist["loss_history"])  # once trained: the population keeps them stacked
            out.append(finish_run(c, d, m, P, hist, s, diverged_at=pop.diverged_at[j],
                                  iterations=its if pop.diverged_at[j] is None else pop.diverged_at[j],
                                  iters_per_epoch=pop.iters_per_epoch,
                                  seconds=seconds / len(configs), done_iters=its,
                                  val_at=val_at[j], best_epoch=int(np.argmax(
                                      hist["val_acc_history"])) if hist["val_acc_history"] else -1,
                                  figures=figures, tb=tbs[j]))
    return out
