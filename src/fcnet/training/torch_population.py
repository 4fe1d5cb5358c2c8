"""Several compatible torch runs trained as one ``TorchPopulation``.

Compatible: torch exercise runs (``fcnet.torch_backend.train.exercise_mode``)
with the same data, architecture, batch size, length, sampling, dtype and
device; they may differ in lr, decay, reg, dropout keep, init scale and seed
(members with one seed share one batch stream and layer 1 becomes one
product).  Each member gets its own complete run directory, laid out as a lone
torch run's (``train_torch``).  Not checkpointed mid-way: a killed population's
unfinished members simply train again.  ``fcnet.training.train_population``
(population_run) reuses finished runs and calls ``train_members`` for the rest.
``eval_at`` (validation accuracy along the way) works here, for a population of one too.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fcnet.config import RunConfig
from fcnet.training import rundir
from fcnet.training.prepare import data_key, prepare
from fcnet.training.tensorboard import RunLogger
from fcnet.training.torch_run import finish_torch

# fields torch members may differ in: none changes an array shape
FREE = {"lr", "decay", "reg", "dropout_keep", "std", "init", "seed"}


def population_key(config: RunConfig) -> tuple:
    """Torch configs with equal keys can train together."""
    d = config.model_dump()
    return tuple((k, str(v)) for k, v in sorted(d.items()) if k not in FREE)


def compatible(configs: list[RunConfig]) -> bool:
    """Whether these torch configs can train as one population."""
    from fcnet.torch_backend import exercise_mode

    return (bool(configs)
            and all(c.backend == "torch" and exercise_mode(c) and not c.keep_best
                    and c.init.split(":")[0] == "normal" for c in configs)
            and len({population_key(c) for c in configs}) == 1)


def train_members(configs: list[RunConfig], run_dirs: list[Path], quiet: bool, eval_at: list[int],
           figures: bool) -> list[dict]:
    from fcnet.torch_backend.population import TorchPopulation
    from fcnet.torch_backend.train import TorchTrainer, flush_subnormals, training_length

    c0 = configs[0]
    assert len({data_key(c) for c in configs}) == 1
    P = prepare(c0, progress=not quiet)
    shape = P.image_shape if P.X_train.shape[1] == int(np.prod(P.image_shape or [0])) else None
    trainers = [TorchTrainer(c, P.X_train.shape[1], len(P.classes), shape, P.classes)
                for c in configs]
    summaries = [rundir.start(d, c, P, population=len(configs)) for c, d in zip(configs, run_dirs)]
    tbs = [RunLogger.open(d, enabled=c.tensorboard) for c, d in zip(configs, run_dirs)]
    t0 = trainers[0]
    total, per_epoch = training_length(c0, P.X_train.shape[0])
    params = [[x for lin in t.model.linears for x in (lin.weight.detach().T, lin.bias)]
              for t in trainers]
    pop = TorchPopulation(
        params, P.X_train, P.y_train, P.X_val, P.y_val, lrs=[c.lr for c in configs],
        decays=[c.decay for c in configs], regs=[c.reg for c in configs],
        keeps=[c.dropout_keep for c in configs], seeds=[c.seed for c in configs],
        num_iters=total, batch_size=c0.batch_size, sampling=c0.sampling,
        dtype="bfloat16" if t0.amp else str(t0.dtype)[6:], device=t0.device, eval_at=eval_at)
    start = time.perf_counter()
    with flush_subnormals():
        pop.run()
    seconds = (time.perf_counter() - start) / len(configs)
    train_accs = pop.accuracies(pop.X, pop.y)
    return [_finish(c, d, t, pop, j, P, s, tbs[j], seconds, float(train_accs[j]), per_epoch,
                    figures)
            for j, (c, d, t, s) in enumerate(zip(configs, run_dirs, trainers, summaries))]


def _finish(config: RunConfig, run_dir: Path, t, pop, j: int, P, summary: dict, tb: RunLogger,
            seconds: float, final_train_acc: float, per_epoch: int, figures: bool) -> dict:
    """Member j's weights into its trainer, then its run files, as a lone torch run's."""
    import torch

    p = pop.member_params(j)
    with torch.no_grad():
        for lin, w, b in zip(t.model.linears, p[::2], p[1::2], strict=True):
            lin.weight.copy_(w.T)
            lin.bias.copy_(b)
    hist = pop.history(j)
    diverged = pop.diverged_at()[j]
    t.history, t.epoch = hist, len(hist["val_acc_history"])
    t.iteration, t.diverged_at = pop.it if diverged is None else diverged, diverged
    tb.losses(0, hist["loss_history"])
    out = {**hist, "diverged_at": diverged, "iterations": t.iteration, "iters_per_epoch": per_epoch,
           "epochs": t.epoch, "train_seconds": seconds, "final_train_acc": final_train_acc}
    return finish_torch(config, run_dir, t, P, out, summary, tb, figures, val_at=pop.val_at[j])
