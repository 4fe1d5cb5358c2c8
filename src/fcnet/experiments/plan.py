"""A sweep's spec (base config, grid, points or search) and its plan: the jobs (one training
run each), identical configs merged and iteration-only differences shared by one run."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from fcnet.config import RunConfig, make_config, read_toml
from fcnet.errors import FcnetError
from fcnet.experiments import space
from fcnet.experiments.space import SearchParam, run_key
from fcnet.training.population_run import compatible, population_key


@dataclass
class SweepSpec:
    """A base config and either a grid (field -> values, their product applied to each of
    ``points``) or a ``search`` ('random' or 'tpe') over ``params`` for ``trials`` trials."""

    base: RunConfig
    grid: dict[str, list] = field(default_factory=dict)
    points: list[dict] = field(default_factory=list)
    search: str | None = None
    params: dict[str, SearchParam] = field(default_factory=dict)
    trials: int = 20
    seed: int = 0
    seeds: int = 1  # each trial trains its config with this many seeds (its value: the mean)

    def __post_init__(self) -> None:
        if not 1 <= self.seeds <= 100:
            raise FcnetError(f"--seeds must be between 1 and 100, got {self.seeds}")
        if self.seeds > 1 and any("seed" in d for d in (self.grid, self.params, *self.points)):
            raise FcnetError("--seeds and a sweep over 'seed' both set the seed: give one")
        if self.search is not None:
            if self.search not in ("random", "tpe"):
                raise FcnetError(f"--search: expected one of random, tpe, got {self.search!r}")
            if self.grid or self.points:
                raise FcnetError("give either a grid or a search, not both")
            if not self.params:
                raise FcnetError(f"--search {self.search}: give the ranges with --param")
            if self.trials < 1:
                raise FcnetError("--trials must be at least 1")
            for p in self.params.values():  # both ends of every range must be valid configs
                for v in p.ends():
                    space.with_changes(self.base, {p.name: v}, where=f"--param {p.name}")
        for name, values in self.grid.items():
            values = space.normalise_values(space.check_field(name, "grid"), list(values), f"grid {name}")
            self.grid[name] = [_canonical(self.base, name, v) for v in values]
        self.points = [{space.check_field(k, "grid"): _canonical(self.base, k, v) for k, v in p.items()}
                       for p in self.points]

    def identity(self) -> dict:
        """Everything that defines the sweep's trials (not the trial budget)."""
        d: dict[str, Any] = {"base": json.loads(self.base.model_dump_json())}
        if self.search:
            d.update(search=self.search, seed=self.seed,
                     params={n: p.describe() for n, p in self.params.items()})
        else:
            d.update(grid=self.grid, points=self.points)
        if self.seeds > 1:  # absent at 1, so one-seed sweeps keep their identity
            d["seeds"] = self.seeds
        return d

    @classmethod
    def from_identity(cls, d: dict, trials: int = 20) -> SweepSpec:
        search = {"search": d["search"], "seed": d["seed"], "trials": trials, "params": space.parse_params(
            [f"{n}={t}" for n, t in d["params"].items()])} if d.get("search") else {}
        return cls(make_config(d["base"]), grid=d.get("grid", {}), points=d.get("points", []),
                   seeds=int(d.get("seeds", 1)), **search)

    def varied(self) -> list[str]:
        """The fields this sweep varies, in order (its table's columns)."""
        if self.search:
            return list(self.params)
        return list(dict.fromkeys([n for p in self.points for n in p] + list(self.grid)))


def _canonical(base: RunConfig, name: str, value: Any) -> Any:
    """A value as the config stores it (reg 0 -> 0.0: equal sweeps compare equal), else as given."""
    try:
        return getattr(space.with_changes(base, {name: value}), name)
    except FcnetError:
        return value


def load_sweep_file(path: str | Path) -> tuple[dict, dict]:
    """A sweep TOML file -> (``[base]`` values, SweepSpec's grid, points and, given [search], search,
    trials, seed and params: docs/sweep.md); a file with none of these tables is a plain run config."""
    data = read_toml(path)
    tables = {"base", "grid", "points", "search"}
    if not tables & set(data):
        return data, {}
    if extra := sorted(set(data) - tables):
        raise FcnetError(f"{path}: unknown key {extra[0]!r} in a sweep file "
                         "(put run config keys under [base])")
    grid = data.get("grid", {})
    if not isinstance(grid, dict):
        raise FcnetError(f"{path}: [grid] must be a table of field = [values]")
    sweep: dict[str, Any] = {"grid": {}}
    for name, values in grid.items():
        if isinstance(values, str):  # "START:STOP:STEP" or "V1,V2", as on the command line
            name, values = space.parse_grid_item(f"{name}={values}")
        sweep["grid"][name] = values if isinstance(values, list) else [values]
    sweep["points"] = points = data.get("points", [])
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise FcnetError(f"{path}: points must be an array of tables ([[points]])")
    if "search" in data:
        s = dict(data["search"])
        if unknown := set(s) - {"method", "trials", "seed", "params"}:
            raise FcnetError(f"{path}: [search] has unknown key {sorted(unknown)[0]!r}")
        items = [f"{name}=" + (",".join(space._choice_key(x) if isinstance(x, list) else json.dumps(x)
                                        for x in v) if isinstance(v, list) else str(v))
                 for name, v in s.get("params", {}).items()]
        sweep.update(search=s.get("method", "tpe"), trials=s.get("trials"), seed=s.get("seed"),
                     params=space.parse_params(items))
    return data.get("base", {}), sweep


class Job(NamedTuple):
    """One training run: its config (at its group's largest iteration count) and where it is evaluated."""

    key: str
    config: RunConfig
    eval_at: list[int]


def pop_key(config: RunConfig) -> str | None:
    """Jobs with equal keys may train as one population (None: never), as the population trainer says."""
    if not compatible([config]):
        return None
    return hashlib.sha256(repr(population_key(config)).encode()).hexdigest()[:12]


class Point(NamedTuple):
    """One grid point: its config, and which job's run gives its number."""

    changes: dict
    config: RunConfig
    key: str
    job: str
    iteration: int | None  # read along the job's run at this iteration; None: its end


def plan(spec: SweepSpec) -> tuple[list[Point], dict[str, Job]]:
    """Grid points (``points x product(grid)``) in order, and the distinct jobs that compute them."""
    combos = [dict(zip(spec.grid, c, strict=True)) for c in itertools.product(*spec.grid.values())]
    changes = [{**point, **combo} for point in spec.points or [{}] for combo in combos]
    configs = [space.with_changes(spec.base, ch) for ch in changes]  # all validated up front
    groups: dict[str, list[RunConfig]] = {}
    for c in configs:  # a step schedule without keep_best: k iterations are read along a longer run
        shares = c.schedule == "step" and not c.keep_best and c.epochs is None
        groups.setdefault(run_key(c.model_copy(update={"iters": 1}) if shares else c), []).append(c)
    jobs, job_of = {}, {}  # job key -> Job; run key -> (job key, iteration read along it)
    for members in groups.values():
        longest = max(members, key=lambda c: c.iters or 0)
        key = run_key(longest)
        jobs[key] = Job(key, longest, sorted({c.iters for c in members if c.iters != longest.iters}))
        job_of.update({run_key(c): (key, None if c.iters == longest.iters else c.iters) for c in members})
    points = [Point(ch, c, run_key(c), *job_of[run_key(c)]) for ch, c in zip(changes, configs, strict=True)]
    return points, jobs
