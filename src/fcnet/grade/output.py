"""What a grading writes: the terminal table, grades.json, grades.csv, and the
self-contained HTML overview plus one page per submission (through ``fcnet.report``)."""

from __future__ import annotations

import csv
import io
from collections import Counter
from itertools import chain, count
from pathlib import Path

from fcnet.files import write_json, write_text
from fcnet.grade.checks import BY_NAME
from fcnet.grade.grade import Grade, fmt
from fcnet.grade.similar import Pair
from fcnet.report import plots
from fcnet.report.render import Figure, Report, Section, Table, slugify

SHOWN_LINES = 80  # shared lines shown per similar pair on a submission's page


def table(grades: list[Grade]) -> str:
    """Submission, score, checks passed and those failed; with one submission, each check's line."""
    w = max([len("submission")] + [len(g.submission) for g in grades])
    lines = [f"{'submission':<{w}}  {'score':>5}  {'passed':>6}  failed"]
    for g in grades:
        passed = f"{len(g.checks) - len(g.failed)}/{len(g.checks)}"
        lines.append(f"{g.submission:<{w}}  {g.score:5.1f}  {passed:>6}  {', '.join(g.failed) or '-'}")
    if len(grades) == 1:
        cw = max(len(c.name) for c in grades[0].checks)
        lines += [""] + [f"[{'PASS' if c.passed else 'FAIL'}] {c.name:<{cw}}  {c.message}"
                         for c in grades[0].checks]
    return "\n".join(lines)


def _rule(name: str, threshold: float | None) -> list[str]:
    """The pass rule as two cells, the comparison and the number (a numeric column: no wrapping)."""
    return ["-", "-"] if threshold is None else [BY_NAME[name].op, fmt(threshold)]


def _shared(g: Grade, pairs: list[Pair], slugs: dict[str, str]) -> list:
    """The section (if any) listing the submissions similar to ``g``, with the lines of ``g`` they share."""
    mine = [(p.b, p.sim_a, p.sim_b, p.lines_a) if p.a == g.submission else (p.a, p.sim_b, p.sim_a, p.lines_b)
            for p in pairs if g.submission in (p.a, p.b)]
    lines = g.source.splitlines()
    text = []
    for other, mine_in, theirs_in, shared in mine:
        more = f" (the first {SHOWN_LINES})" if len(shared) > SHOWN_LINES else ""
        text.append(f"**[{other}](../{slugs[other]}/report.html)**: {100 * mine_in:.0f}% of this file is "
                    f"found in {other}'s, {100 * theirs_in:.0f}% of {other}'s in this one. "
                    f"The {len(shared)} shared lines of this file{more}:\n")
        body = "\n".join(f"{n:4d}  {lines[n - 1] if n <= len(lines) else ''}" for n in shared[:SHOWN_LINES])
        text.append("```\n" + body.replace("```", "'" * 3) + "\n```\n")
    return [Section("Similar submissions", "Near-identical code once names, comments and whitespace are "
                    "normalised (the template given with `--template` does not count).\n\n"
                    + "\n".join(text))] if mine else []


def _submission_page(g: Grade, out: Path, meta: dict, pairs: list[Pair], slugs: dict[str, str]) -> Path:
    # each message without its leading "value rule threshold", which the columns show
    rows = [[c.name, "pass" if c.passed else "FAIL", fmt(c.value),
             *_rule(c.name, c.threshold), f"{c.points:g}",
             c.message.partition("; ")[2] if c.value is not None and c.message.startswith(f"{fmt(c.value)} ")
             else c.message] for c in g.checks]
    sections = [Section("Checks", f"Score **{g.score:.1f}** / 100; {len(g.failed)} of {len(g.checks)} "
                        "checks failed.  [All submissions](../../report.html)",
                        tables=[Table("Checks, their values and thresholds",
                                      ["check", "result", "value", "rule", "threshold", "points",
                                       "message"], rows)]), *_shared(g, pairs, slugs)]
    history = next((c.detail or {} for c in g.checks if c.name == "q3_toy_training"), {}).get("loss_history")
    if history:
        png = plots.loss_curve(history, out / "toy_loss.png", title="Toy training loss (lr 0.1, reg 5e-6)")
        sections.append(Section("Toy training", "The course's driver: `np.random.seed(0)`, the toy net, "
                                "100 SGD iterations on the 5 toy samples.",
                                figures=[Figure(png, "Toy training loss per iteration")]))
    if g.output.strip():
        note = f" (the last {len(g.output.encode())} of {g.output_bytes} bytes)" \
            if g.output_bytes > len(g.output.encode()) else ""
        sections.append(Section("Output", f"What the submission printed{note}:\n\n```\n"
                                + g.output.replace("```", "'''").rstrip() + "\n```"))
    meta = {"submission": g.path, "score": f"{g.score:.1f}", **meta, "seconds": f"{g.seconds:.1f}"}
    return Report(f"fcnet grade: {g.submission}", sections, meta).write(out)[1]


def _overview(grades: list[Grade], slugs: dict[str, str], out: Path, meta: dict, pairs: list[Pair]) -> Path:
    figs = out / "figures"
    bins = [f"{10 * k}-{10 * k + 9}" for k in range(9)] + ["90-100"]
    counts = Counter(min(int(g.score // 10), 9) for g in grades)
    dist = plots.bar_table(bins, {"submissions": [counts.get(k, 0) for k in range(10)]},
                           figs / "scores.png", "score", "submissions", "Distribution of scores")
    first = {c.name: c for c in grades[0].checks}
    fails = {n: sum(1 for g in grades if n in g.failed) for n in first}
    order = sorted(first, key=lambda n: -fails[n])
    most = plots.bar_table(order, {"failed": [fails[n] for n in order]}, figs / "failures.png",
                           "check", "submissions failing it", "Which checks fail most")
    links = "\n".join(f"- [{g.submission}](submissions/{slugs[g.submission]}/report.html): {g.score:.1f}"
                      for g in grades)
    score_rows = [[g.submission, f"{g.score:.1f}", f"{len(g.checks) - len(g.failed)}/{len(g.checks)}",
                   ", ".join(g.failed) or "-"] for g in grades]
    reasons = Counter((c.name, c.message) for g in grades for c in g.checks if not c.passed)
    check_rows = [[n, f"{first[n].points:g}", *_rule(n, first[n].threshold), len(grades) - fails[n], fails[n],
                   max((m for k, m in reasons if k == n), key=lambda m: reasons[n, m], default="-")]
                  for n in order]
    scores = sorted(g.score for g in grades)
    sections = [
        Section("Scores", "Each submission's page has its numbers and its toy loss curve:\n\n" + links,
                tables=[Table("Scores", ["submission", "score", "passed", "failed checks"], score_rows)],
                figures=[Figure(dist, "Distribution of scores (0-100)")]),
        Section("Checks", "Most failed first; the most common reason is the failure message most "
                "submissions share.",
                tables=[Table("Checks (docs/grade.md says what each measures)",
                              ["check", "points", "rule", "threshold", "passed", "failed",
                               "most common reason"], check_rows)],
                figures=[Figure(most, "Submissions failing each check")]),
    ]
    pair_rows = [[p.a, p.b, f"{100 * p.sim_a:.0f}%", f"{100 * p.sim_b:.0f}%", len(p.lines_a)] for p in pairs]
    pair_links = "\n".join(f"- [{p.a}](submissions/{slugs[p.a]}/report.html) and "
                           f"[{p.b}](submissions/{slugs[p.b]}/report.html)" for p in pairs)
    base = ("the template given does not count" if meta.get("template")
            else "no --template given: code every student received counts as shared")
    sections.append(Section(
        "Similar submissions",
        (f"Pairs whose code is near-identical once names, comments and whitespace are normalised "
         f"(copydetect's fingerprints; {base}); each one's page shows the lines it shares:\n\n{pair_links}")
        if pairs else f"No two submissions are near-identical ({base}).",
        tables=[Table("Similar pairs: the share of each file found in the other",
                      ["submission", "similar to", "of the first", "of the second", "shared lines"],
                      pair_rows)] if pairs else []))
    meta = {"submissions": len(grades), "mean score": f"{sum(scores) / len(scores):.1f}",
            "median score": f"{scores[len(scores) // 2]:.1f}", **meta}
    return Report("fcnet grade", sections, meta).write(out)[1]


def write_outputs(grades: list[Grade], out: Path, meta: dict, pairs: list[Pair] = ()) -> dict[str, Path]:
    """grades.json, grades.csv, report.html (+ .md), submissions/<slug>/report.html (one grade at least)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["submission", "score", *[c.name for c in grades[0].checks], "failed"])
    w.writerows([g.submission, f"{g.score:.1f}", *[int(c.passed) for c in g.checks], " ".join(g.failed)]
                for g in grades)
    paths = {"json": write_json(out / "grades.json", [g.to_json() for g in grades]),
             "csv": write_text(out / "grades.csv", buf.getvalue())}
    slugs: dict[str, str] = {}  # each submission's page folder: its name as a unique slug
    for g in grades:
        base = slugify(g.submission)
        slugs[g.submission] = next(s for s in chain([base], (f"{base}-{k}" for k in count(2)))
                                   if s not in slugs.values())
    for g in grades:
        _submission_page(g, out / "submissions" / slugs[g.submission], meta, pairs, slugs)
    paths["html"] = _overview(grades, slugs, out, meta, pairs)
    return paths
