"""Claims of a source as data, and fcnet's verdict on each: supported, within noise or
contradicted, with the numbers it rests on (docs/study.md, "Claims"). A claim compares cells
of one table, each named by a *selector* of its axes, e.g. ``{ batch_size = 200, hidden = [50] }``
or ``{ row = 1 }`` (by number from 1 or label); the depth block is the table ``depth`` (axes
``layers``, ``init``), the chosen block ``chosen`` (axis ``split``). A claim that makes k
comparisons uses k intervals at 1 - 0.05 / k each (Bonferroni): it errs at most 5% of the time."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from fcnet.errors import FcnetError
from fcnet.experiments import space
from fcnet.experiments.results import _fmt
from fcnet.experiments.stats import LEVEL, Cell, difference, sampling_ci

DEFAULT_MARGIN = {"better": 0.0, "unbeaten": 1.0, "no_better": 1.0, "grows_then_flat": 1.0, "overfits": 5.0}
VERDICTS = SUPPORTED, NOISE, CONTRADICTED, UNTESTED = ("supported", "within noise",
                                                       "contradicted", "not tested")


@dataclass
class Claim:
    """One claim of the source: a comparison of cells of one table."""

    id: str
    text: str
    table: str
    kind: str
    a: tuple[int, int] | None = None  # a cell: (row, column)
    b: list[tuple[int, int]] | None = None  # None: every other row of a's column
    margin: float = 0.0
    up_to: Any = None
    at: dict = field(default_factory=dict)
    value: float | None = None
    dataset: str | None = None


class Axes(NamedTuple):
    """A table's axes as claims see them: names, values (to select) and labels (to show)."""

    names: list[str]
    values: list[list]
    labels: list[list[str]]


def table_axes(table) -> Axes:
    """The axes of a StudyTable; explicit rows are the axis 'row' (1-based, or a label's head: 'config 1')."""
    axes = Axes([], [], [])
    for name, items in table.axes:
        rows = name == "configuration"
        axes.names.append("row" if rows else name)
        axes.values.append(list(range(1, len(items) + 1)) if rows else [ch[name] for _, ch in items])
        axes.labels.append([str(lab).split(":")[0] if rows else label(name, lab) for lab, _ in items])
    return axes


def label(name: str, v: Any) -> str:
    """A short label of one axis value: 'H100', 'batch 200', 'reg 0.25'."""
    if isinstance(v, str) and name != "hidden":
        return v
    short = {"hidden": "H", "batch_size": "batch ", "pca": "PCA ", "iters": "", "dropout_keep": "keep "}
    return short.get(name, name + " ") + ("none" if v is None else _fmt(v))


def select(axes: Axes, sel: dict, where: str, partial: bool = False) -> tuple[int | None, ...]:
    """A selector -> (row, column) indices (None for an axis a partial selector leaves out)."""
    for k in sel:
        if k not in axes.names:
            raise FcnetError(f"{where}: {k!r} is not an axis of this table "
                             f"(its axes: {', '.join(axes.names)})")
    out: list[int | None] = []
    for name, values, labels in zip(axes.names, axes.values, axes.labels):
        if name not in sel:
            if not partial and len(values) > 1:
                raise FcnetError(f"{where}: give {name!r} too (the table's axes: {', '.join(axes.names)})")
            out.append(None if partial else 0)
            continue
        v = sel[name]
        if name == "row" and isinstance(v, str) and v in labels:
            v = values[labels.index(v)]
        elif name in space.FIELDS and isinstance(v, str):
            v = space.parse_value(name, v)
        if name == "hidden" and isinstance(v, int):
            v = [v]
        if v not in values:
            shown = ", ".join(str(x) for x in values[:12])
            raise FcnetError(f"{where}: {name} = {sel[name]!r} is not a row or column of the "
                             f"table ({name}: {shown})")
        out.append(values.index(v))
    return tuple(out + [0] * (2 - len(out)))


def resolve(spec, k: int, tables: dict[str, Axes]):
    """A validated ClaimSpec -> Claim with cells as (row, column) indices, else FcnetError."""
    where = f"claim {spec.id!r}" if spec.id else f"claim[{k}]"
    if spec.table not in tables:
        raise FcnetError(f"{where}: no table {spec.table!r} (the study's tables: {', '.join(tables)})")
    axes = tables[spec.table]
    c = Claim(spec.id or f"claim-{k + 1}", spec.text, spec.table, spec.kind,
              margin=float(spec.margin if spec.margin is not None else DEFAULT_MARGIN.get(spec.kind, 0.0)),
              value=spec.value, dataset=spec.dataset)
    if spec.kind == "overfits" and spec.table != "depth":
        raise FcnetError(f"{where}: an 'overfits' claim is about the depth table (train and "
                         f"validation accuracy), not {spec.table!r}")
    if spec.a is not None:
        c.a = select(axes, spec.a, f"{where}.a")
    if spec.b is not None:
        c.b = [select(axes, b, f"{where}.b") for b in (spec.b if isinstance(spec.b, list) else [spec.b])]
        if c.a in c.b:
            raise FcnetError(f"{where}.b: compares a cell with itself")
    if spec.kind == "grows_then_flat":
        along = spec.along or axes.names[0]
        if along not in axes.names:
            raise FcnetError(f"{where}.along: {along!r} is not an axis of the table "
                             f"(its axes: {', '.join(axes.names)})")
        pos = select(axes, {along: spec.up_to}, f"{where}.up_to", partial=True)
        at = select(axes, spec.at, f"{where}.at", partial=True)
        axis = axes.names.index(along)
        other = 1 - axis
        if len(axes.names) == 2 and spec.at == {} and len(axes.values[other]) > 1:
            raise FcnetError(f"{where}.at: give the other axis ({axes.names[other]!r})")
        c.up_to = pos[axis]
        c.at = {"axis": axis, "other": at[other] or 0}
        if c.up_to == 0:
            raise FcnetError(f"{where}.up_to: the first value cannot be where growth ends")
    return c


class Verdict(NamedTuple):
    claim: str
    table: str
    verdict: str
    numbers: str


def _interval(d) -> str:
    return f"{100 * d.d:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}]"


def _verdict(checks: list) -> str:
    """(diff, low, high) checks: supported if all intervals lie inside, contradicted if one lies beyond."""
    if any(lo is not None and d.high < lo or hi is not None and d.low > hi for d, lo, hi in checks):
        return CONTRADICTED
    if all((lo is None or d.low > lo) and (hi is None or d.high < hi) for d, lo, hi in checks):
        return SUPPORTED
    return NOISE


def evaluate(claim, cell: Callable[[str, int, int], Cell], axes: Axes, dataset: str,
             train: Callable[[int, int], Cell] | None = None) -> Verdict:
    """The verdict on one claim; ``cell(table, row, col)`` gives a cell's accuracies."""

    def lab(rc) -> str:
        parts = [axes.labels[i][rc[i]] for i in range(len(axes.names)) if len(axes.values[i]) > 1]
        return " ".join(parts) or axes.labels[0][rc[0]]

    def show(rc) -> str:
        return f"{lab(rc)} {100 * cell(claim.table, *rc).mean:.1f}"

    out = functools.partial(Verdict, claim.text, claim.table)
    if claim.dataset and claim.dataset != dataset:
        return out(UNTESTED, f"the source's number is for {claim.dataset}, this study ran on {dataset}")
    m = claim.margin / 100
    if any(not cell(claim.table, r, c).values for r in range(len(axes.values[0]))
           for c in range(len(axes.values[1]) if len(axes.values) > 1 else 1)):
        return out(UNTESTED, "a run this claim compares has no result")
    if claim.kind == "reproduces":
        c = cell(claim.table, *claim.a)
        lo, hi = sampling_ci(c.mean, c.n)
        return out(SUPPORTED if lo <= claim.value / 100 <= hi else CONTRADICTED,
                   f"fcnet {100 * c.mean:.1f}, one run's 95% sampling interval at n={c.n}: "
                   f"[{100 * lo:.1f}, {100 * hi:.1f}]; source {claim.value:g}")
    if claim.kind == "overfits":
        v, t = cell(claim.table, *claim.a), train(*claim.a)
        d = difference(t, v)
        return out(_verdict([(d, m, None)]),
                   f"{lab(claim.a)}: train {100 * t.mean:.1f}, val {100 * v.mean:.1f}; "
                   f"train - val {_interval(d)} pts (overfitting: > {claim.margin:g}; {d.test})")
    if claim.kind == "grows_then_flat":
        axis, other = claim.at["axis"], claim.at["other"]
        rc = (lambda k: (k, other)) if axis == 0 else (lambda k: (other, k))
        later = list(range(claim.up_to + 1, len(axes.values[axis])))
        level = 1 - (1 - LEVEL) / (1 + len(later))
        top = cell(claim.table, *rc(claim.up_to))
        grow = difference(top, cell(claim.table, *rc(0)), level)
        flats = [(k, difference(cell(claim.table, *rc(k)), top, level)) for k in later]
        verdict = _verdict([(grow, 0.0, None)] + [(d, None, m) for _, d in flats])
        text = f"{lab(rc(claim.up_to))} - {lab(rc(0))}: {_interval(grow)} pts (grows: > 0)"
        if worst := max(flats, key=lambda kd: kd[1].high, default=None):
            text += (f"; largest later gain, {lab(rc(worst[0]))} - {lab(rc(claim.up_to))}: "
                     f"{_interval(worst[1])} pts (flat: < {claim.margin:g})")
        return out(verdict, text + f"; {grow.test}, {100 * level:.1f}% intervals")
    # better / unbeaten / no_better / equal: a against one or more b
    a = cell(claim.table, *claim.a)
    bs = claim.b if claim.b is not None else [  # None: every other row of a's column
        (k, claim.a[1]) for k in range(len(axes.values[0])) if k != claim.a[0]]
    level = 1 - (1 - LEVEL) / len(bs)
    diffs = [(b, difference(a, cell(claim.table, *b), level)) for b in bs]
    bounds, rule = {"better": ((m, None), f"better: > {claim.margin:g}"),
                    "no_better": ((None, m), f"no better: < {claim.margin:g}"),
                    # no b better than a by more than the margin: a - b > -m
                    "unbeaten": ((-m, None), f"unbeaten: > {-claim.margin:g}"),
                    "equal": ((-m, m), f"equal: inside ±{claim.margin:g}")}[claim.kind]
    verdict = _verdict([(d, *bounds) for _, d in diffs])
    # the deciding comparison first: the weakest for a 'supported', else the worst
    shown = sorted(diffs, key=lambda x: x[1].low if claim.kind in ("better", "unbeaten") else -x[1].high)[:3]
    text = "; ".join(f"{show(claim.a)} - {show(b)}: {_interval(d)}" for b, d in shown)
    if len(diffs) > len(shown):
        text += f"; ... ({len(diffs)} comparisons)"
    return out(verdict, f"{text} ({rule}; differences in points, {diffs[0][1].test}, "
                        f"{100 * level:.1f}% intervals)")
