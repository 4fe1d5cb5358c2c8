"""Several compatible torch runs trained as one ``TorchPopulation``.

Compatible (``compatible``): torch runs of plain SGD with a normal init and the
``STACKED`` settings, the same data and every field but ``FREE``.  Each member gets
its own complete run directory, equal to its lone run's (``train_torch``).  Not
checkpointed mid-way: a killed population's unfinished members train again
(``fcnet.training.train_population`` reuses finished runs, calls ``train_members``).
"""

from __future__ import annotations

from pathlib import Path

from fcnet.config import RunConfig
from fcnet.training import rundir
from fcnet.training.prepare import data_key, prepare
from fcnet.training.tensorboard import RunLogger
from fcnet.training.torch_run import finish_torch, trainer

# fields torch members may differ in: none changes an array shape
FREE = {"lr", "decay", "reg", "dropout_keep", "std", "init", "seed"}
# what the stacked SGD step trains: these fields at these values
STACKED = {"optimizer": "sgd", "batchnorm": False, "activation": "relu", "augment": False,
           "mixup": 0.0, "ema": 0.0, "label_smoothing": 0.0, "weight_decay": None,
           "keep_best": False, "time_budget": None}


def population_key(config: RunConfig) -> tuple:
    """Torch configs with equal keys can train together."""
    d = config.model_dump()
    return tuple((k, str(v)) for k, v in sorted(d.items()) if k not in FREE)


def compatible(configs: list[RunConfig]) -> bool:
    """Whether these torch configs can train as one population."""
    return (bool(configs)
            and all(c.backend == "torch" and c.init.split(":")[0] == "normal" and c.hidden
                    and all(getattr(c, k) == v for k, v in STACKED.items()) for c in configs)
            and len({population_key(c) for c in configs}) == 1)


def train_members(configs: list[RunConfig], run_dirs: list[Path], quiet: bool, eval_at: list[int],
                  figures: bool) -> list[dict]:
    import torch

    from fcnet.torch_backend.population import TorchPopulation

    assert len({data_key(c) for c in configs}) == 1
    P = prepare(configs[0], progress=not quiet)
    summaries = [rundir.start(d, c, P, population=len(configs)) for c, d in zip(configs, run_dirs)]
    pop = TorchPopulation(configs, P.X_train.shape[1], len(P.classes))
    outs = pop.run(P.X_train, P.y_train, P.X_val, P.y_val, eval_at=eval_at)
    done = []
    for j, (c, d, s, out) in enumerate(zip(configs, run_dirs, summaries, outs, strict=True)):
        t = trainer(c, P)  # member j as a lone run's trainer, to finish as one
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
        done.append(finish_torch(c, d, t, P, out, s, tb, figures))
    return done
