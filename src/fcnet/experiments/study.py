"""Studies as data: a TOML file (docs/study.md) of tables, blocks and claims, run as one grid
sweep (identical configs train once, iteration counts share one run, mates train as one
population; ``--workers``, ``--storage`` and ``--join`` work as for sweeps)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from fcnet.config import RunConfig
from fcnet.errors import FcnetError
from fcnet.experiments import space, studyfile
from fcnet.experiments.claims import Axes, Claim


def bundled() -> dict[str, Path]:
    """The study files that ship with fcnet, by name."""
    d = resources.files("fcnet") / "studies"
    return {Path(p.name).stem: Path(str(p)) for p in d.iterdir() if p.name.endswith(".toml")}


@dataclass
class Study:
    title: str
    base: RunConfig
    tables: list[studyfile.StudyTable]
    blocks: dict[str, dict]
    note: str = ""
    source: str = ""  # the file as the user named it (a bundled study: its name)
    seeds: int = 1
    claims: list[Claim] = field(default_factory=list)
    axes: dict[str, Axes] = field(default_factory=dict)  # of the tables claims name, by id
    runs: list[dict] = field(default_factory=list)  # every point the study needs

    def identity(self) -> str:
        return hashlib.sha256(json.dumps([self.base.model_dump_json(), self.runs],
                                         sort_keys=True, default=str).encode()).hexdigest()[:10]

    def own_runs(self) -> list[RunConfig]:
        """The configs the report trains alone although a longer run reads their accuracy along
        the way: the baseline's and the chosen block's weight pictures need their final weights."""
        from fcnet.experiments.plan import SweepSpec, plan

        along = {p.key for p in plan(SweepSpec(self.base, points=self.runs))[0] if p.iteration is not None}
        own = ([{}] if "baseline" in self.blocks else []) + self.blocks.get("chosen", {}).get("weights", [])
        configs = [space.with_changes(self.base, changes) for changes in own]
        return list({space.run_key(c): c for c in configs if space.run_key(c) in along}.values())

    def seeded(self, changes: dict, seeds: int) -> list[dict]:
        """The changes of a cell's ``seeds`` runs: the base seed, then the next ones."""
        return [changes] + [{**changes, "seed": self.base.seed + s} for s in range(1, seeds)]


def load_study(path: str | Path, dataset: str | None = None, data_path: str | None = None,
               dtype: str | None = None, backend: str | None = None, seeds: int | None = None) -> Study:
    """A study file (or a bundled study's name) -> Study, every value validated before anything
    runs. ``seeds`` overrides the file's ``seeds``, its tables' too."""
    source = str(path)
    path = bundled().get(source, Path(path))
    data = studyfile.read(path, source)
    if seeds is not None and not 1 <= seeds <= studyfile.MAX_SEEDS:
        raise FcnetError(f"--seeds must be between 1 and {studyfile.MAX_SEEDS}, got {seeds}")
    overrides = {k: v for k, v in {"dataset": dataset, "path": data_path, "dtype": dtype,
                                   "backend": backend}.items() if v}
    model, base, note, claims, axes = studyfile.parse(data, source, overrides, seeds)
    blocks = {b.kind: b.model_dump() for b in model.block}
    study = Study(model.title or path.stem, base, model.table, blocks, note, source, model.seeds,
                  claims, axes)
    runs = study.runs
    if "baseline" in blocks:
        runs += study.seeded({}, study.seeds)
    for t in model.table:
        runs += [s for row in t.cells() for c in row for s in study.seeded(c, t.seeds)]
    runs += blocks.get("batch_noise", {}).get("runs", [])
    if "chosen" in blocks:
        runs += [*study.seeded(blocks["chosen"]["config"], study.seeds), *blocks["chosen"]["weights"]]
    return study


def run_study(study: Study, out: Path, *, workers: int = 1, storage: str | None = None, join: bool = False,
              quiet: bool = False, depth: bool = True, figures: bool = False) -> dict:
    """Run a study (one sweep of all its runs), then write report.md and report.html.
    ``figures``: each run's own PNGs too (the report never shows them)."""
    from fcnet.experiments.floor import study_floor
    from fcnet.experiments.study_report import Sections
    from fcnet.experiments.sweep import SweepSpec, plan, run_sweep
    from fcnet.report.render import Report

    out = Path(out)
    # the floor's first pass, before anything trains (its second when the study is done): the
    # header's floor step is the faster of the two (a spell of host noise slowed one pass by 50%).
    # The depth study's torch shapes wait for the second (importing torch here: 1.4 s of 25 on digits)
    study_floor(study, population=16, depth=False, out=out, since=time.time(), fit=False)
    started = time.perf_counter()
    name = f"study-{study.identity()}"
    spec = SweepSpec(study.base, points=study.runs)
    if not quiet:
        print(f"{study.title}: {len(study.runs)} table cells and runs, one sweep", flush=True)
    errors: list[BaseException] = []  # the side thread's, re-raised here
    side = threading.Thread(target=_beside_the_sweep, args=(study, out, depth, errors),
                            name="beside-the-sweep", daemon=True)
    result = run_sweep(spec, out, workers=workers, storage=storage, study=name, join=join,
                       population=16, quiet=quiet, figures=figures, plots=False,
                       on_start=side.start if workers > 1 else None)
    if side.ident is not None:  # started
        side.join()
    if errors:
        raise errors[0]
    rows = {}
    for r in result.rows:
        rows.setdefault(r.key, r)
    ctx, b = Sections(study, out, rows), study.blocks
    results: dict = {"dataset": study.base.dataset, "title": study.title, "sweep": name}
    wanted = [(ctx.toy, "toy" in b), (ctx.baseline, "baseline" in b), (ctx.tables, study.tables),
              (ctx.chosen, "chosen" in b), (ctx.depth, "depth" in b and depth), (ctx.claims, study.claims)]
    sections = [section(results) for section, on in wanted if on]
    elapsed = time.perf_counter() - started
    results["wall_seconds"] = elapsed
    meta = {"study": study.source, "dataset": study.base.dataset, "path": study.base.path,
            "seeds": study.seeds, "runs": len(plan(spec)[1]), "workers": workers,
            "wall seconds": f"{elapsed:.0f}", "dtype": study.base.dtype, "optuna study": name}
    # the header's floor: the trainings this invocation ran, at the floor step (docs/bench.md)
    floor = study_floor(study, population=16, depth=depth, out=out, since=time.time() - elapsed)
    results["floor_seconds"] = floor.seconds
    meta.update(floor.header(elapsed))
    md, html = Report(f"{study.title} on {study.base.dataset}", sections, meta).write(out)
    results["report_md"], results["report_html"] = str(md), str(html)
    return results


def _beside_the_sweep(study: Study, out: Path, depth: bool, errors: list) -> None:
    """A daemon thread's work while the sweep's worker processes train (started once the sweep is open
    and checked: a refused sweep trains nothing): the report's own runs and the depth block's torch runs,
    on one BLAS and one torch thread. An interrupted study does not wait for it (the depth cache is
    written atomically)."""
    from threadpoolctl import threadpool_limits

    from fcnet.experiments.study_report import depth_results
    from fcnet.training import train_run

    try:
        # one BLAS thread: the workers hold the cores, and OpenBLAS's second thread would only wait
        # (spinning) for its turn on them; this process's limit, restored before the floor is timed
        with threadpool_limits(1):
            for config in study.own_runs():
                train_run(config, out / "runs" / space.run_key(config))
            if depth and "depth" in study.blocks:
                depth_results(study, out, study.blocks["depth"], threads=1)
        _warm_report()
    except BaseException as err:
        errors.append(err)


def _warm_report() -> None:
    """Load what the report needs (about 2 s on 2 cores: matplotlib and its fonts, scipy.stats,
    statsmodels), here beside the sweep rather than after it, when nothing else runs."""
    import io

    import scipy.stats  # noqa: F401
    import statsmodels.stats.multitest  # noqa: F401
    import statsmodels.stats.proportion  # noqa: F401
    from matplotlib.figure import Figure

    import fcnet.report.plots  # noqa: F401
    import fcnet.report.render  # noqa: F401

    fig = Figure(figsize=(1, 1))
    fig.add_subplot().set_title("warm")
    fig.savefig(io.BytesIO(), format="png")
