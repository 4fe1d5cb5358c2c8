"""A study's floor on this machine, the least time its training could take here (docs/bench.md): every
training it executes (after sharing and reuse), its iterations times the floor step
(:class:`fcnet.bench.FloorStep`) at its shapes and precision, measured here on its own rows."""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fcnet.bench import FloorStep
from fcnet.config import RunConfig
from fcnet.experiments import space
from fcnet.experiments.plan import SweepSpec, plan, pop_key
from fcnet.training import prepare as prep

ROUNDS = 5  # interleaved rounds of timed steps per shape (its step time: the fastest)
MIN_STEPS = 5  # each round times at least this many steps ...
MIN_SECONDS = 0.005  # ... and at least this long
MAX_STEPS = 400  # a block's most steps
SWITCH_GAP_S = 0.3  # OpenBLAS's idle workers spin ~0.1 s and slow torch's (and back)

# (Shape, training rows) -> (fastest ms of every pass, passes that timed it), this process
_STEP_MS: dict[tuple, tuple[float, int]] = {}


@dataclass(frozen=True)
class Shape:
    """What a floor step costs depends on: engine, precision, layer sizes (D, H1, ..., C), batch,
    the members trained at once and whether each draws its own batch (their seeds differ)."""

    backend: str  # numpy | torch
    dtype: str  # float32 | float64 | bfloat16
    sizes: tuple[int, ...]
    batch: int
    k: int = 1
    own: bool = False

    def describe(self) -> str:
        pop = (f", population of {self.k}" if self.k > 1 else "") + (", own batches" if self.own else "")
        return f"{'-'.join(map(str, self.sizes))} batch {self.batch} {self.dtype} {self.backend}{pop}"


@dataclass
class FloorRun:
    """One training run (or population) of the study at the floor."""

    what: str  # run | population | own run | depth
    shape: Shape
    iterations: int
    rows: int  # training rows its batches are gathered from
    config: RunConfig = field(repr=False)  # whose prepared rows (a member's, for a population)
    step_ms: float | None = None

    @property
    def seconds(self) -> float:
        return self.iterations * (self.step_ms or 0.0) / 1e3


@dataclass
class StudyFloor:
    runs: list[FloorRun]
    reused: int = 0  # planned runs an earlier invocation finished (not in the floor)
    notes: list[str] = field(default_factory=list)
    data: _Data | None = field(default=None, repr=False)  # the rows, until measured
    load: float | None = None  # the 1-minute load average when measured (other work)
    passes: int = 0  # timing passes of its shapes in this process (the most over the runs)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.runs)

    def _load(self) -> str:  # a busy machine slows the floor's longer steps too
        return "" if self.load is None else f"; load average {self.load:.1f} on {os.cpu_count()} cores"

    def header(self, wall_seconds: float) -> dict[str, str]:
        """The report header's lines: the floor and wall / floor."""
        s, reused = self.seconds, f"; {self.reused} runs reused, not counted" if self.reused else ""
        when = "measured now" if self.passes < 2 else "timed before training and after, each step its fastest"
        return {"floor seconds": f"{s:.{1 if s >= 10 else 3}f} ({len(self.runs)} trainings at the floor step"
                f"{reused}{self._load()}, {when}: docs/bench.md)",
                "wall / floor": f"{wall_seconds / s:.2f}" if s > 0 else "n/a"}

    def to_json(self) -> dict:
        return {"seconds": self.seconds, "reused": self.reused, "notes": self.notes,
                "load_average": self.load, "passes": self.passes,
                "runs": [{"what": r.what, "shape": asdict(r.shape), "iterations": r.iterations,
                          "rows": r.rows, "step_ms": r.step_ms, "seconds": r.seconds}
                         for r in self.runs]}

    def table(self) -> str:
        """One line per shape: trainings, iterations, ms per step, seconds."""
        by: dict[tuple, list[FloorRun]] = {}
        for r in self.runs:
            by.setdefault((r.what, r.shape), []).append(r)
        lines = [f"{'what':<11} {'shape':<52} {'runs':>5} {'iterations':>11} {'ms/step':>8} {'seconds':>8}"]
        for (what, shape), rs in sorted(by.items(), key=lambda kv: -sum(r.seconds for r in kv[1])):
            lines.append(f"{what:<11} {shape.describe():<52} {len(rs):>5} "
                         f"{sum(r.iterations for r in rs):>11,} {rs[0].step_ms:>8.3f} "
                         f"{sum(r.seconds for r in rs):>8.1f}")
        lines.append(f"floor: {self.seconds:.1f} s for {len(self.runs)} trainings"
                     + (f" ({self.reused} planned runs reused, not counted)" if self.reused else "")
                     + self._load())
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _finished(path: Path | None, since: float | None) -> bool:
    """Was the run of this summary.json (or depth study's result) finished, before
    ``since`` (epoch seconds) if given? A summary is written when a run starts too."""
    with contextlib.suppress(OSError, ValueError):
        if path is not None and (since is None or path.stat().st_mtime < since):
            done = path.name != "summary.json"  # a depth study's result
            return done or json.loads(path.read_text()).get("status") in ("completed", "diverged")
    return False


def _precision(config: RunConfig) -> tuple[str, str]:
    """(backend, dtype of the products) as the run trains: a torch bf16 (or amp) run on
    a CPU without bf16 instructions falls back to float32."""
    if config.backend != "torch":
        return "numpy", config.dtype
    if config.dtype == "float64" or not (config.dtype == "bfloat16" or config.amp):
        return "torch", config.dtype if config.dtype == "float64" else "float32"
    import torch

    from fcnet.torch_backend.train import bf16_unsupported

    return "torch", "float32" if bf16_unsupported(torch.device("cpu")) else "bfloat16"


def _fits(config: RunConfig) -> bool:
    """Whether the config's rows need a fitted PCA or ZCA (15 s or more on CIFAR-10)."""
    return config.pca is not None or config.preprocess == "zca"


@dataclass
class _Data:
    """Training rows (N, D) and class count per data key, prepared once each (and
    kept until measured: prepare's own cache holds two, and a PCA is slow to refit).
    ``fit``: False leaves out the runs whose rows need a fit not yet known (``_fits``)."""

    prepared: dict[tuple, tuple[np.ndarray, int]] = field(default_factory=dict)
    pca_width: dict[tuple, int] = field(default_factory=dict)  # a PCA's components, from a run's summary
    fit: bool = True

    def ready(self, config: RunConfig) -> bool:
        key = prep.data_key(config)
        return self.fit or not _fits(config) or key in self.prepared or key in self.pca_width

    def rows(self, config: RunConfig) -> tuple[np.ndarray, int]:
        key = prep.data_key(config)
        if key not in self.prepared and key in self.pca_width:
            # the rows before the PCA cut to its width: the same shapes, no refit (~15 s on CIFAR-10)
            X, classes = self.rows(config.model_copy(update={"pca": None}))
            self.prepared[key] = (np.ascontiguousarray(X[:, :self.pca_width[key]]), classes)
        if key not in self.prepared:
            P = prep.prepare(config)
            self.prepared[key] = (P.X_train, len(P.classes))
        return self.prepared[key]

    def read_width(self, config: RunConfig, summary: Path | None) -> None:
        """Note a PCA config's input width from its run's summary.json, if there is one."""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if config.pca is not None and summary is not None:
                self.pca_width[prep.data_key(config)] = int(json.loads(summary.read_text())["input_size"])


def _run(what: str, config: RunConfig, k: int, data: _Data, own: bool = False) -> list[FloorRun]:
    """The run at the floor, or none where its rows need a fit ``data`` may not make."""
    if not data.ready(config):
        return []
    X, c = data.rows(config)
    n, d = X.shape
    shape = Shape(*_precision(config), (d, *config.hidden, c), config.batch_size, k, own)
    return [FloorRun(what, shape, config.length(n)[0], n, config)]


def floor_runs(study, *, population: int = 16, depth: bool = True, out: Path | None = None,
               since: float | None = None, fit: bool = True) -> StudyFloor:
    """The trainings a :class:`fcnet.experiments.study.Study` executes, at most ``population`` mates at
    once (not yet measured), less the runs finished in ``out`` (before ``since``, epoch seconds).
    ``fit=False``: less those whose rows need a PCA or ZCA fit too (before a study trains)."""
    runs_dir = Path(out) / "runs" if out is not None else None
    data = _Data(fit=fit)
    floor = StudyFloor([], data=data)
    _, jobs = plan(SweepSpec(study.base, points=study.runs))
    groups: dict[str, list] = {}
    for job in jobs.values():
        summary = runs_dir and runs_dir / job.key / "summary.json"
        if _finished(summary, since):
            floor.reused += 1
        else:
            data.read_width(job.config, summary)
            groups.setdefault(pop_key(job.config) or job.key, []).append(job)
    for members in groups.values():
        for i in range(0, len(members), population):
            chunk = members[i:i + population]
            # members of other seeds draw other batches (the population trainer's rule)
            floor.runs += _run("population" if len(chunk) > 1 else "run", chunk[0].config, len(chunk),
                               data, own=len({j.config.seed for j in chunk}) > 1)
    # rows read along a longer run that the report re-trains alone for their figures
    for config in study.own_runs():
        if _finished(runs_dir and runs_dir / space.run_key(config) / "summary.json", since):
            floor.reused += 1
        else:
            floor.runs += _run("own run", config, 1, data)
    if depth and "depth" in study.blocks:
        floor.runs += _depth_runs(study, runs_dir, since, floor)
    return floor


def _depth_runs(study, runs_dir: Path | None, since, floor: StudyFloor) -> list[FloorRun]:
    """The depth study's torch runs: one per (init, depth), float32, Adam (only its
    products are in the floor), at ``depth_study``'s hidden size, epochs and batch."""
    block = study.blocks["depth"]
    try:
        from fcnet.torch_backend.depth import depth_study
    except ImportError as err:  # no torch: the study skips it too
        floor.notes.append(f"depth study not counted: {err}")
        return []
    config = space.with_changes(study.base, block.get("config") or {})
    if runs_dir is not None and any(_finished(p, since) for p in
                                    runs_dir.glob(f"depth-{space.run_key(config)}-*.json")):
        floor.reused += 1
        return []
    defaults = {k: v.default for k, v in inspect.signature(depth_study).parameters.items()}
    depths = block.get("depths") or defaults["depths"]
    inits = block.get("init") or defaults["init"]
    inits = [inits] if isinstance(inits, str) else inits
    h = defaults["hidden"]
    config = config.model_copy(update={"backend": "torch", "dtype": "float32", "amp": False,
                                       "batch_size": defaults["batch_size"], "epochs": defaults["epochs"]})
    return [r for _ in inits for d in depths
            for r in _run("depth", config.model_copy(update={"hidden": [h] * (int(d) - 1)}), 1, floor.data)]


def measure(floor: StudyFloor, progress: Callable | None = None) -> StudyFloor:
    """Fill in each run's step time (ms): the shapes of one data key and precision timed in
    interleaved rounds after a warm-up, a pass.  The fastest step, not the median: the floor is
    what the machine can do; other work slows most steps.  Each call is a pass, and a shape's step
    time the fastest of every pass in this process: a spell of host noise as long as a pass
    (seconds) slowed all of it, a study's floor by up to 50%, and ``fcnet study`` times one pass
    before it trains and one after."""
    todo: dict[tuple, dict[tuple, FloorRun]] = {}
    for r in floor.runs:
        key = (r.shape, prep.data_key(r.config))
        todo.setdefault((r.shape.backend, r.shape.dtype, key[1]), {})[key] = r
    last = None
    for (backend, dtype, _), shapes in sorted(todo.items(), key=lambda kv: kv[0][:2]):
        if last not in (None, backend):
            time.sleep(SWITCH_GAP_S)
        last = backend
        # the run's own prepared rows (N, D), in the precision its products use
        X = (floor.data or _Data()).rows(next(iter(shapes.values())).config)[0]
        X = np.ascontiguousarray(X, dtype=dtype if backend == "numpy" else np.float32)
        if backend == "torch":
            import torch

            X = torch.from_numpy(X).to(getattr(torch, dtype))
        steps = {key: FloorStep(X, list(r.shape.sizes), r.shape.batch, r.shape.k, own=r.shape.own)
                 for key, r in shapes.items()}
        fastest = dict.fromkeys(steps, math.inf)
        for f in steps.values():
            for _ in range(3):
                f.step()
        for _ in range(ROUNDS):
            for key, f in steps.items():  # at least MIN_STEPS steps, for at least MIN_SECONDS
                n, start = 0, time.perf_counter()
                while n < MAX_STEPS and (n < MIN_STEPS or time.perf_counter() - start < MIN_SECONDS):
                    t0 = time.perf_counter()
                    f.step()
                    fastest[key] = min(fastest[key], time.perf_counter() - t0)
                    n += 1
        for key, t in fastest.items():
            ms, passes = _STEP_MS.get(key, (math.inf, 0))
            _STEP_MS[key] = (min(ms, 1e3 * t), passes + 1)
            if progress:
                progress()
        del X, steps
    timed = [_STEP_MS[(r.shape, prep.data_key(r.config))] for r in floor.runs]
    for r, (ms, _) in zip(floor.runs, timed, strict=True):
        r.step_ms = ms
    floor.passes = max((passes for _, passes in timed), default=0)
    floor.data = None
    floor.load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return floor


def study_floor(study, *, population: int = 16, depth: bool = True, out: Path | None = None,
                since: float | None = None, progress: Callable | None = None, fit: bool = True) -> StudyFloor:
    """The study's floor on this machine, measured now (see the module docstring)."""
    return measure(floor_runs(study, population=population, depth=depth, out=out, since=since, fit=fit),
                   progress)
