"""A sweep's results: rows, ranking, and the terminal / Markdown / CSV / JSON tables."""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcnet import files
from fcnet.config import RunConfig
from fcnet.experiments.plan import SweepSpec


@dataclass
class Row:
    """One row of a sweep's table."""

    config: RunConfig
    params: dict
    val_acc: float | None
    status: str  # completed | diverged | shared | reused | running | pending | error
    key: str
    run_dir: str | None
    iteration: int | None = None
    trial: int | None = None
    error: str | None = None
    train_seconds: float | None = None

    @property
    def finished(self) -> bool:
        return self.val_acc is not None and self.status not in ("running", "pending", "error")


@dataclass
class SweepResult:
    sweep_dir: Path
    spec: SweepSpec
    rows: list[Row]  # grid order (search: trial order)

    def ranked(self) -> list[Row]:
        """Rows by validation accuracy, best first; unfinished rows last."""
        return sorted(self.rows, key=lambda r: (0, -r.val_acc) if r.finished else (1, 0))

    def best(self) -> Row | None:
        return next((r for r in self.ranked() if r.finished), None)

    @property
    def ok(self) -> bool:
        return all(r.finished or r.status == "diverged" for r in self.rows)

    def to_json(self) -> list[dict]:
        return [{**vars(r), "config": json.loads(r.config.model_dump_json())} for r in self.ranked()]

    def table(self, fmt: str = "text") -> str:
        """The ranked table as 'text' (aligned), 'markdown' (run dirs linked) or 'csv'."""
        cols = self.spec.varied()
        rows = self.ranked()
        if fmt == "csv":
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["rank", *cols, "val_acc", "status", "run_dir", "key", "error"])
            w.writerows([i, *(_fmt(r.params.get(c)) for c in cols), "" if r.val_acc is None else
                         repr(r.val_acc), r.status, r.run_dir or "", r.key, r.error or ""]
                        for i, r in enumerate(rows, 1))
            return buf.getvalue()
        head = ["#", *cols, "val acc", "status", "run"]
        body = []
        for i, r in enumerate(rows, 1):
            try:
                run = os.path.relpath(r.run_dir, self.sweep_dir) if r.run_dir else ""
            except ValueError:  # on another drive (Windows)
                run = r.run_dir
            if fmt == "markdown" and run:
                run = f"[{run}]({run}/)"
            if r.iteration is not None and run:
                run += f" @{r.iteration}"
            status = r.status if not r.error else f"{r.status}: {r.error}"
            body.append([str(i), *(_fmt(r.params.get(c)) for c in cols),
                         "-" if r.val_acc is None else f"{r.val_acc:.4f}", status, run])
        if fmt == "markdown":
            lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in b) + " |" for b in body]
            return "\n".join(lines) + "\n"
        widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
        return "".join("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() + "\n"
                       for cells in [head, *body])

    def write(self, study=None) -> None:
        """results.md, .csv and .json in the sweep directory, with the Optuna ``study``'s figures if given."""
        d = self.sweep_dir
        figures = optuna_figures(study, d) if study is not None else []
        md = self.table("markdown") + "".join(f"\n![{caption}]({name})\n" for name, caption in figures)
        files.write_text(d / "results.md", md)
        files.write_text(d / "results.csv", self.table("csv"))
        files.write_text(d / "results.json", json.dumps(self.to_json(), indent=2) + "\n")


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return "x".join(str(x) for x in v)
    return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def optuna_figures(study, out: Path) -> Iterator[tuple[str, str]]:
    """Optuna's own plots of the finished trials, when at least two params vary: (file, caption) each."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varied = [n for n in {n for t in done for n in t.params}
              if len({json.dumps(t.params.get(n)) for t in done}) > 1]
    if len(varied) < 2:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis

    for name, fn, caption in (("importance.png", "plot_param_importances", "parameter importance (fANOVA)"),
                              ("parallel.png", "plot_parallel_coordinate", "parallel coordinates")):
        with warnings.catch_warnings(action="ignore"):  # "experimental" warnings of optuna's plots
            try:
                ax = getattr(vis, fn)(study, params=sorted(varied))
            except (ValueError, RuntimeError):  # e.g. importances of constant values
                continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(8, 4.5)
        fig.tight_layout()
        files.atomic_write(out / name, lambda f, fig=fig: fig.savefig(f, format="png", dpi=100))
        plt.close(fig)
        yield name, caption
