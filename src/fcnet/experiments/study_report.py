"""The sections of a study's report, read from its finished sweep: toy checks, baseline,
tables (mean and interval over seeds, one run's sampling interval, the differences beyond
noise, an error-bar figure each), chosen model, depth study and the claims' verdicts."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from fcnet import files
from fcnet.experiments import claims as claims_mod
from fcnet.experiments import space, stats
from fcnet.experiments.results import _fmt
from fcnet.experiments.studyfile import StudyTable
from fcnet.report.render import Figure, Section, Table


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def spread(seeds: int) -> str:
    return "one seed" if seeds == 1 else f"mean ± 95% CI, {seeds} seeds"


def cell_text(c: stats.Cell) -> list[str]:
    """A cell's two numbers: '97.2 ± 0.4' (its mean and half the t-interval over seeds; '97.2' for one
    seed) and '±1.3' (half one run's Wilson sampling interval at the mean); '-' for a cell without runs."""
    if not c.values:
        return ["-", "-"]
    (m, lo, hi), (s_lo, s_hi) = stats.mean_ci(c.values), stats.sampling_ci(c.mean, c.n)
    return [f"{100 * m:.1f}" if lo is None else f"{100 * m:.1f} ± {100 * (hi - lo) / 2:.1f}",
            f"±{100 * (s_hi - s_lo) / 2:.1f}"]


STATS_TEXT = (
    "Each fcnet cell is the mean validation accuracy over the cell's seeds (runs that differ only in their "
    "seed: initial weights, minibatch stream, dropout masks) with, after ±, half the width of its 95% "
    "confidence interval over those seeds (Student's t): how far the mean of many more seeds could "
    "plausibly lie, on this validation split. The '1 run ±' column is half the width of the 95% Wilson "
    "interval of a single run's accuracy measured on the study's {n} validation images: how far one run's "
    "number could lie from the accuracy the same model would have on all images of its kind. The note under "
    "each table names the rows whose difference is beyond noise (the test and the multiple-comparison "
    "correction are named there); each figure shows the means with the seed intervals as error bars and one "
    "run's sampling interval as a pale bar.")


class Sections:
    """What the sections of a study's report read: its rows, by the config they stand for."""

    def __init__(self, study, out: Path, rows: dict):
        self.study, self.out, self.rows = study, out, rows
        self.figs = out / "figures"
        self.figs.mkdir(parents=True, exist_ok=True)
        # the cells claims compare, by table id (also 'chosen', 'depth', 'depth train'), as sections run
        self.grids: dict[str, list[list[stats.Cell]]] = {}

    def row(self, changes: dict):
        return self.rows[space.run_key(space.with_changes(self.study.base, changes))]

    @cached_property
    def sizes(self) -> dict:
        """The study's split sizes (every run shares the split): n_train, n_val."""
        for r in self.rows.values():
            f = Path(r.run_dir or "") / "summary.json"
            if f.exists():
                s = files.read_json(f)
                return {"n_train": int(s["n_train"]), "n_val": int(s["n_val"])}
        return {"n_train": 1, "n_val": 1}

    def cell(self, changes: dict, seeds: int, label: str = "") -> stats.Cell:
        """A cell's validation accuracies over its seeds (a run that failed has none)."""
        values = [self.row(c).val_acc for c in self.study.seeded(changes, seeds)]
        return stats.Cell(label, [float(v) for v in values if v is not None and math.isfinite(v)],
                          self.sizes["n_val"])

    def own_run(self, changes: dict) -> tuple[Path, dict]:
        """This config's own run dir (trained alone if a longer run read it along the way) and summary."""
        from fcnet.training import train_run

        r = self.row(changes)
        run_dir = Path(r.run_dir)
        if r.iteration is not None:
            run_dir = run_dir.parent / r.key
            train_run(r.config, run_dir, quiet=True, resume=True)
        return run_dir, files.read_json(run_dir / "summary.json")

    def weights_picture(self, run_dir: Path) -> Path:
        """The run's weights.png, else drawn now from its params.npz (a study's runs draw no PNGs
        unless --figures); a path that does not exist when the inputs are no images."""
        from fcnet.report import pictures as figures

        if (run_dir / "weights.png").exists():
            return run_dir / "weights.png"
        path = self.figs / f"weights-{run_dir.name}.png"
        shape = files.read_json(run_dir / "summary.json").get("image_shape")
        W1 = files.load_npz(run_dir / "params.npz")["W1"]
        if shape and W1.shape[0] == math.prod(shape) and shape[-1] in (1, 3):
            figures.weights_png(W1, tuple(shape), path)
        return path

    # ---- sections
    def toy(self, results: dict):
        from fcnet.check import run_checks
        from fcnet.report import plots

        chk = run_checks()
        report_rel = {"W1": "6.3e-09", "b1": "1.3e-09", "W2": "3.4e-09", "b2": "3.9e-11"}
        rows = [["probabilities: sum |diff|", f"{chk['scores_diff']:.2e}", "< 1e-7", "-"],
                ["loss (reg 0.05): |diff|", f"{chk['loss_diff']:.2e}", "< 1e-12", "1.30378789133"],
                *([f"{k} max relative error", f"{v:.1e}", "< 1e-8", report_rel[k]]
                  for k, v in chk["rel_error"].items()),
                ["toy SGD final loss", f"{chk['toy_final_loss']:.17g}", "< 0.02", "0.01714960793873205"]]
        plots.loss_curve(chk["toy_loss_history"], self.figs / "toy_loss.png", title="Toy training loss")
        results["checks_ok"] = chk["ok"]
        return Section(
            "Q1-Q3: toy checks", id="toy",
            text="The exercise's toy net (4-10-3, weights 0.1 randn from RandomState(0)) on its "
                 "5 toy samples: forward probabilities, the regularised loss, a centred-difference "
                 "gradient check (h = 1e-5) and 100 SGD iterations driven as the course's script "
                 "drives them. " + ("Every check passes." if chk["ok"] else "**A check FAILED.**"),
            tables=[Table("Toy checks", ["check", "fcnet", "threshold", "report"], rows, id="t-toy")],
            figures=[Figure(self.figs / "toy_loss.png", "Toy training loss (Figure 1)")])

    def baseline(self, results: dict):
        bdir, s = self.own_run({})
        c = self.study.base
        cell = self.cell({}, self.study.seeds)
        results["baseline_val"] = cell.mean
        ref = self.study.blocks["baseline"].get("reference")
        return Section(
            "Q3: the baseline", id="baseline",
            text=f"Hidden {_fmt(c.hidden)}, std {c.std:g}, {c.iters:,} iterations, batch {c.batch_size}, lr "
                 f"{c.lr:g}, decay {c.decay:g} per epoch, reg {c.reg:g}, {c.preprocess} preprocessing, on "
                 f"{c.dataset} ({s['n_train']} train / {s['n_val']} val). Validation accuracy "
                 f"**{cell_text(cell)[0]}%** ({spread(self.study.seeds)})"
                 + (f" (report: {ref}% on CIFAR-10)." if ref is not None else "."),
            tables=[Table("Baseline", ["run", f"fcnet val % ({spread(self.study.seeds)})",
                                       "1 run ±", "report val %", "train s"],
                          [["baseline", *cell_text(cell),
                            "-" if ref is None else ref, f"{s['train_seconds']:.1f}"]], id="t-baseline")],
            figures=[f for f in (Figure(bdir / "loss.png", "Baseline: loss vs iteration"),
                                 Figure(bdir / "accuracy.png", "Baseline: train/val accuracy per epoch"),
                                 Figure(bdir / "weights.png", "Baseline: first-layer weights"))
                     if f.path.exists()])

    def table(self, t: StudyTable):
        """A study table: each cell's mean ± 95% CI over seeds, one run's ± and reference; a noise note."""
        ref = iter(t.reference) if t.reference is not None else None
        row_axis, rows = t.axes[0]
        cols = t.columns()
        head = [row_axis.replace("_", " "), *t.show]
        for name, _ in cols:
            head += [f"fcnet val % ({spread(t.seeds)})" if name is None else f"{name} fcnet",
                     "1 run ±" if name is None else f"{name} 1 run ±"]
            if ref is not None:
                head.append(t.reference_label if name is None else f"{name} report")
        body, self.grids[t.id] = [], []
        for (rlabel, _), changes in zip(rows, t.cells()):
            line = [_fmt(rlabel) if isinstance(rlabel, list) or rlabel is None else rlabel]
            if t.show:  # from the first column's run
                first = files.read_json(Path(self.row(changes[0]).run_dir) / "summary.json")
                line += [first.get(key, "-") for key in t.show.values()]
            cells = [self.cell(c, t.seeds, _short(row_axis, rlabel)) for c in changes]
            self.grids[t.id].append(cells)
            for c in cells:
                line += cell_text(c)
                if ref is not None:
                    line.append(next(ref))
            body.append(line)
        parts = [t.note.rstrip(".") + "." if t.note else "",
                 "" if len(cols) == 1 else f"fcnet columns: {spread(t.seeds)}.", self.noise_note(t)]
        return Table(t.name, head, body, note=" ".join(x for x in parts if x), id=t.id)

    def noise_note(self, t: StudyTable) -> str:
        """Which rows differ beyond noise, per column (Holm over each column's pairs)."""
        parts, test, n_pairs = [], "", 0
        for j, (name, _) in enumerate(t.columns()):
            cells = [row[j] for row in self.grids[t.id] if row[j].values]
            pairs = stats.beyond_noise(cells)
            n_pairs = max(n_pairs, len(pairs))
            wins: dict[int, list[int]] = {}
            for p in pairs:
                test = p.diff.test
                if p.beyond:
                    hi, lo = (p.i, p.j) if p.diff.d > 0 else (p.j, p.i)
                    wins.setdefault(hi, []).append(lo)
            text = "; ".join(f"{cells[w].label} > {', '.join(cells[k].label for k in sorted(ls))}"
                             for w, ls in sorted(wins.items())) or "none"
            where = "" if name is None else f"{name}: "
            parts.append(where + text)
        return "" if not n_pairs else (f"Beyond noise ({test}, Holm correction over each column's {n_pairs} "
                                       "pairs, 5% family-wise): " + "; ".join(parts) + ".")

    def interval_figure(self, t: StudyTable):
        """Per column: the means, their seed intervals and one run's sampling interval."""
        from fcnet.report import plots

        row_axis, rows = t.axes[0]
        series = {}
        for j, (name, _) in enumerate(t.columns()):
            # per row: mean, seed interval low and high, sampling low and high
            points = [[math.nan if x is None else 100 * x for x in
                       (*stats.mean_ci(c.values), *stats.sampling_ci(c.mean, c.n))]
                      if c.values else [math.nan] * 5 for c in (row[j] for row in self.grids[t.id])]
            series[name or ""] = tuple(map(list, zip(*points)))
        path = self.figs / f"intervals-{t.id}.png"
        plots.interval_plot([_short(row_axis, lab) for lab, _ in rows], series, path,
                            xlabel=row_axis.replace("_", " "), ylabel="fcnet val %", title=t.name)
        bars = f"error bars: 95% CI over {t.seeds} seeds" if t.seeds > 1 else "one seed: no error bars"
        return Figure(path, f"{t.name}: fcnet's mean validation accuracy ({bars}; pale bars: "
                            "one run's 95% sampling interval)")

    def tables(self, results: dict):
        from fcnet.report import plots
        from fcnet.training.prepare import preprocessor

        tables = [self.table(t) for t in self.study.tables]
        figures = [self.interval_figure(t) for t in self.study.tables]
        results["tables"] = {t.id: table.rows for t, table in zip(self.study.tables, tables)}
        results["cells"] = {t.id: [[c._asdict() for c in row] for row in self.grids[t.id]]
                            for t in self.study.tables}
        if noise := self.study.blocks.get("batch_noise"):
            labels = noise.get("labels") or [f"run {k + 1}" for k in range(len(noise["runs"]))]
            curves = {lab: [float(r["loss"]) for r in csv.DictReader(
                (Path(self.row(c).run_dir) / "loss.csv").read_text().splitlines())]
                for lab, c in zip(labels, noise["runs"])}
            title = "Loss noise: " + " vs ".join(labels)
            plots.multi_curves(curves, self.figs / "batch_noise.png", xlabel="iteration",
                               ylabel="loss", title=title)
            figures.append(Figure(self.figs / "batch_noise.png", title))
        if pca := self.study.blocks.get("pca_curve"):
            line = float(pca["pca"])
            curve = preprocessor(space.with_changes(self.study.base, {"pca": line})).explained_variance_curve
            if curve is not None:
                plots.explained_variance(np.asarray(curve), self.figs / "pca_variance.png", line=line)
                figures.append(Figure(self.figs / "pca_variance.png",
                                      f"PCA: cumulative explained variance, {line:g} line"))
        return Section(
            "The hyper-parameter study", id="tables",
            text="Validation accuracy in %, fcnet beside the reference numbers (the report's, measured on "
                 f"official CIFAR-10; fcnet's on **{self.study.base.dataset}**). Each table varies one or "
                 "two things and states what it held fixed. Every run of the study is a trial of one Optuna "
                 "sweep: identical configs train once, and runs that differ only in their iteration count "
                 "are one run evaluated along the way (the learning rate decays once per epoch, not per "
                 "fraction of the total, so the first k iterations of a long run are exactly a k-iteration "
                 "run). Seed 0's runs draw the same minibatch stream, so its rows differ only by what is "
                 "varied; further seeds change the initial weights and the minibatch stream. In float64 a "
                 "population member equals its lone run exactly; in float32 (this study: "
                 f"{self.study.base.dtype}) rounding alone moves a 4,000-iteration run's validation "
                 "accuracy by up to about a point.\n\n" + STATS_TEXT.format(n=f"{self.sizes['n_val']:,}")
                 + (" " + self.study.note if self.study.note else ""),
            tables=tables, figures=figures)

    def chosen(self, results: dict):
        from fcnet.experiments.sweep import test_accuracy

        block = self.study.blocks["chosen"]
        changes = block["config"]
        r = self.row(changes)
        test = test_accuracy(self.out, r)
        results["chosen_test"] = test["test_acc"]
        run_dir = Path(test["run_dir"])
        c = r.config
        val = self.cell(changes, self.study.seeds)
        tc = stats.Cell("", [float(test["test_acc"])], int(test["n"]))
        self.grids["chosen"] = [[val], [tc]]
        labels = block.get("weight_labels") or [
            ", ".join(f"{k} {_fmt(v)}" for k, v in w.items()) or "the base config" for w in block["weights"]]
        figs = [(self.own_run(w)[0], lab) for w, lab in zip(block["weights"], labels)]
        figs.append((run_dir, f"the chosen model (hidden {_fmt(c.hidden)}, lr {c.lr:g}, {c.iters:,} it)"))
        ref = block.get("reference")
        t_lo, t_hi = stats.sampling_ci(test["test_acc"], test["n"])
        return Section(
            "The chosen model", id="chosen",
            text=f"Hidden {_fmt(c.hidden)}, {c.iters:,} iterations, batch {c.batch_size}, "
                 f"lr {c.lr:g}, reg {c.reg:g}, dropout keep {c.dropout_keep:g}, PCA "
                 f"{c.pca or 'none'}: validation {cell_text(val)[0]}% ({spread(self.study.seeds)}), "
                 f"test **{pct(test['test_acc'])}%** on {test['n']} test images (seed 0's run; "
                 f"95% sampling interval {100 * t_lo:.1f}-{100 * t_hi:.1f})"
                 + (f" (report: {ref}% on 1,000 CIFAR-10 test images)" if ref else "")
                 + ". The test split is used once, here (cached in test.json), never for selection.",
            tables=[Table("Chosen model", ["split", "n", "fcnet %", "1 run ±", "report %"],
                          [["val", val.n, *cell_text(val), "-"],
                           ["test", test["n"], pct(test["test_acc"]), cell_text(tc)[1], ref or "-"]],
                          id="t-chosen")],
            figures=[Figure(w, f"First-layer weights: {cap}") for d, cap in figs
                     if d is not None and (w := self.weights_picture(d)).exists()])

    def depth(self, results: dict):
        """Q4: deeper networks in PyTorch, the exercise's init vs Kaiming."""
        block = self.study.blocks["depth"]
        res, png = depth_results(self.study, self.out, block)  # torch or a clear error
        by = {(x["depth"], x["init"]): x for x in reversed(res)}
        for split, key in (("val", "depth"), ("train", "depth train")):
            n = self.sizes[f"n_{split}"]
            self.grids[key] = [[stats.Cell("", [float(by[d, i][f"final_{split}_acc"])], n)
                                for i in block["init"]] for d in block["depths"]]
        ref = dict(zip(block["depths"], block["reference"] or [], strict=False))
        rows = results["q4"] = []
        for r in res:
            h0, h1, d = r["history"][0], r["history"][-1], r["depth"]
            rows.append([d, r["init"], ref.get(d, "-") if r["init"] == block["init"][0] else "-",
                         pct(r["final_train_acc"]), pct(r["final_val_acc"]),
                         f"{h0['act_std'][-1]:.1e} -> {h1['act_std'][-1]:.1e}",
                         f"{h0['grad_norm'][0]:.1e} -> {h1['grad_norm'][0]:.1e}"])
        return Section(
            "Q4: deeper networks in PyTorch", id="depth",
            text="2-5 Linear layers, hidden 50, Adam 1e-3 with weight decay 1e-3, 10 epochs, batch 200, lr "
                 "x0.95 per epoch, inputs (x/255 - 0.5)/0.5. With the exercise's init, normal(0, 1e-3), the "
                 "signal shrinks by orders of magnitude at every layer (the score std column): the 4- and "
                 "5-layer nets stay at chance on the *training* set too, so their collapse is not "
                 "overfitting (the report's claim) but vanishing signal. The data gradient of the first "
                 "layers is then far smaller than the weight decay term, which drives those weights to zero "
                 "(W1 gradient norm 0 at the end). Kaiming init, scaled to each layer's fan-in, trains every "
                 "depth. One run (seed 0) per row.",
            tables=[Table("Depth study", ["Linear layers", "init", "report val %", "fcnet train %",
                                          "fcnet val %", "score std (init -> end)",
                                          "W1 grad norm (init -> end)"], rows,
                          note="held fixed: hidden 50, Adam 1e-3, wd 1e-3, 10 epochs, batch 200, "
                               "decay 0.95", id="t-depth")],
            figures=[Figure(png, "Accuracy per epoch, and activation std and "
                                                     "gradient norm per layer, by depth and init")])

    def claims(self, results: dict):
        g = self.grids
        verdicts = [claims_mod.evaluate(cl, lambda t, r, c: g[t][r][c], self.study.axes[cl.table],
                                        self.study.base.dataset, lambda r, c: g["depth train"][r][c])
                    if cl.table in g else claims_mod.Verdict(cl.text, cl.table, claims_mod.UNTESTED,
                                                             f"the {cl.table} section did not run")
                    for cl in self.study.claims]
        results["claims"] = [{"id": c.id, **v._asdict()} for c, v in zip(self.study.claims, verdicts)]
        counts = Counter(v.verdict for v in verdicts)
        return Section(
            "The source's claims, tested", id="claims",
            text="Each conclusion of the source, as the study file states it, with fcnet's verdict on this "
                 "study's runs: **supported** (the comparison holds beyond noise), **within noise** (the "
                 "intervals cannot tell), **contradicted** (the opposite holds beyond noise). Numbers are "
                 "validation accuracy in points; a difference is shown with its interval, at the level the "
                 "claim's number of comparisons allows (Bonferroni: 95% for the claim as a whole). A verdict "
                 f"is about {self.study.base.dataset}, this study's settings and its validation split, not "
                 "about the source's own runs. "
                 + ", ".join(f"{counts[k]} {k}" for k in claims_mod.VERDICTS if counts[k]) + ".",
            tables=[Table("Claims and verdicts", ["claim", "table", "fcnet's numbers", "verdict"],
                          [[v.claim, v.table, v.numbers, v.verdict] for v in verdicts], id="t-claims")])


def _short(axis: str, v: Any) -> str:
    """A row's label in notes and figures: the value, '100' for hidden [100]."""
    return str(v).split(":")[0] if axis == "configuration" else _fmt(v)


def depth_results(study, out: Path, block: dict, threads: int | None = None) -> tuple[list[dict], Path]:
    """The depth block's results and figure: read from ``out``/runs/depth-<key>-<tag>.json, else
    trained now (on ``threads`` torch threads, when given) and cached there; the figure
    ``out``/figures/depth-<key>-<tag>.png drawn where missing (beside the sweep, with the runs)."""
    from fcnet.torch_backend import require_torch

    torch = require_torch()
    from fcnet.torch_backend.depth import depth_study, plot_depth_study
    from fcnet.training.prepare import prepare

    cfg = space.with_changes(study.base, block["config"])
    depths, inits = tuple(block["depths"]), list(block["init"])
    tag = hashlib.sha256(json.dumps([depths, inits]).encode()).hexdigest()[:6]
    cache = Path(out) / "runs" / f"depth-{space.run_key(cfg)}-{tag}.json"
    png = Path(out) / "figures" / f"{cache.stem}.png"
    if cache.exists():  # a rerun reuses the finished depth study
        res = files.read_json(cache)
    else:
        before = torch.get_num_threads()
        torch.set_num_threads(threads or before)
        try:
            P = prepare(cfg)
            res = depth_study(P.X_train, P.y_train, P.X_val, P.y_val, depths=depths, init=inits,
                              progress=False)
        finally:
            torch.set_num_threads(before)
        files.write_json(cache, res)
    if not png.exists():
        png.parent.mkdir(parents=True, exist_ok=True)
        plot_depth_study(res, png)
    return res, png
