"""What a grading writes: the terminal table, grades.json, grades.csv, and the
HTML overview plus one page per submission (through ``fcnet.report``, so the
pages are self-contained: figures embedded as data: URIs)."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

from fcnet.files import write_json, write_text
from fcnet.grade.checks import BY_NAME
from fcnet.grade.grade import Grade, fmt


def table(grades: list[Grade]) -> str:
    """Submission, score, checks passed and the names of those failed; with one
    submission, every check on its own line too."""
    w = max([len("submission")] + [len(g.submission) for g in grades])
    lines = [f"{'submission':<{w}}  {'score':>5}  {'passed':>6}  failed"]
    for g in grades:
        passed = f"{len(g.checks) - len(g.failed)}/{len(g.checks)}"
        lines.append(f"{g.submission:<{w}}  {g.score:5.1f}  {passed:>6}  {', '.join(g.failed) or '-'}")
    if len(grades) == 1:
        lines.append("")
        cw = max(len(c.name) for c in grades[0].checks)
        for c in grades[0].checks:
            lines.append(f"[{'PASS' if c.passed else 'FAIL'}] {c.name:<{cw}}  {c.message}")
    return "\n".join(lines)


def _csv(grades: list[Grade]) -> str:
    names = [c.name for c in grades[0].checks] if grades else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["submission", "score", *names, "failed"])
    for g in grades:
        w.writerow([g.submission, f"{g.score:.1f}", *[int(c.passed) for c in g.checks], " ".join(g.failed)])
    return buf.getvalue()


def _slugs(grades: list[Grade]) -> list[str]:
    from fcnet.report.render import slugify

    taken: set[str] = set()
    out = []
    for g in grades:
        base = slugify(g.submission)
        s, k = base, 2
        while s in taken:
            s, k = f"{base}-{k}", k + 1
        taken.add(s)
        out.append(s)
    return out


def _submission_page(g: Grade, out: Path, meta: dict) -> Path:
    from fcnet.report import plots
    from fcnet.report.render import Figure, Report, Section, Table

    rows = [[c.name, BY_NAME[c.name].question, "pass" if c.passed else "FAIL", fmt(c.value),
             "-" if c.threshold is None else f"{BY_NAME[c.name].op} {fmt(c.threshold)}",
             f"{c.points:g}", c.message] for c in g.checks]
    sections = [Section("Checks", f"Score **{g.score:.1f}** / 100; {len(g.failed)} of {len(g.checks)} "
                        "checks failed.  [All submissions](../../report.html)",
                        tables=[Table("Checks, their values and thresholds",
                                      ["check", "study.md", "result", "value", "threshold", "points",
                                       "message"], rows)])]
    toy = next((c for c in g.checks if c.name == "q3_toy_training"), None)
    if toy is not None and toy.detail and toy.detail.get("loss_history"):
        png = plots.loss_curve(toy.detail["loss_history"], out / "toy_loss.png",
                               title="Toy training loss (lr 0.1, reg 5e-6)")
        sections.append(Section("Toy training", "The course's driver: `np.random.seed(0)`, the toy net, "
                                "100 SGD iterations on the 5 toy samples.",
                                figures=[Figure(png, "Toy training loss per iteration")]))
    if g.output.strip():
        note = f" (the last {len(g.output.encode())} of {g.output_bytes} bytes)" \
            if g.output_bytes > len(g.output.encode()) else ""
        sections.append(Section("Output", f"What the submission printed{note}:\n\n```\n"
                                + g.output.replace("```", "'''").rstrip() + "\n```"))
    _, html = Report(f"fcnet grade: {g.submission}", sections,
                     {"submission": g.path, "score": f"{g.score:.1f}", **meta,
                      "seconds": f"{g.seconds:.1f}"}).write(out)
    return html


def _overview(grades: list[Grade], slugs: list[str], out: Path, meta: dict) -> Path:
    from fcnet.report import plots
    from fcnet.report.render import Figure, Report, Section, Table

    figs = out / "figures"
    bins = [f"{10 * k}-{10 * k + 9}" for k in range(10)]
    bins[-1] = "90-100"
    counts = Counter(min(int(g.score // 10), 9) for g in grades)
    dist = plots.bar_table(bins, {"submissions": [counts.get(k, 0) for k in range(10)]},
                           figs / "scores.png", "score", "submissions", "Distribution of scores")
    names = [c.name for c in grades[0].checks]
    fails = {n: sum(1 for g in grades if n in g.failed) for n in names}
    order = sorted(names, key=lambda n: -fails[n])
    most = plots.bar_table(order, {"failed": [fails[n] for n in order]}, figs / "failures.png",
                           "check", "submissions failing it", "Which checks fail most")
    links = "\n".join(f"- [{g.submission}](submissions/{s}/report.html): {g.score:.1f}"
                      for g, s in zip(grades, slugs))
    score_rows = [[g.submission, f"{g.score:.1f}", f"{len(g.checks) - len(g.failed)}/{len(g.checks)}",
                   ", ".join(g.failed) or "-"] for g in grades]
    check_rows = []
    for n in order:
        reasons = Counter(c.message for g in grades for c in g.checks if c.name == n and not c.passed)
        c0 = grades[0].checks[names.index(n)]
        check_rows.append([n, BY_NAME[n].question, f"{c0.points:g}",
                           "-" if c0.threshold is None else f"{BY_NAME[n].op} {fmt(c0.threshold)}",
                           len(grades) - fails[n], fails[n],
                           reasons.most_common(1)[0][0] if reasons else "-"])
    scores = sorted(g.score for g in grades)
    sections = [
        Section("Scores", "Each submission's page has its numbers and its toy loss curve:\n\n" + links,
                tables=[Table("Scores", ["submission", "score", "passed", "failed checks"], score_rows)],
                figures=[Figure(dist, "Distribution of scores (0-100)")]),
        Section("Checks", "Most failed first; the most common reason is the failure message most "
                "submissions share.",
                tables=[Table("Checks (docs/grade.md says what each measures)",
                              ["check", "study.md", "points", "threshold", "passed", "failed",
                                         "most common reason"], check_rows)],
                figures=[Figure(most, "Submissions failing each check")]),
    ]
    meta = {"submissions": len(grades), "mean score": f"{sum(scores) / len(scores):.1f}",
            "median score": f"{scores[len(scores) // 2]:.1f}", **meta}
    _, html = Report("fcnet grade", sections, meta).write(out)
    return html


def write_outputs(grades: list[Grade], out: Path, meta: dict) -> dict[str, Path]:
    """grades.json, grades.csv, report.html (+ report.md) and submissions/<slug>/report.html."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json(out / "grades.json", [g.to_json() for g in grades]),
             "csv": write_text(out / "grades.csv", _csv(grades))}
    if grades:
        slugs = _slugs(grades)
        for g, s in zip(grades, slugs):
            _submission_page(g, out / "submissions" / s, meta)
        paths["html"] = _overview(grades, slugs, out, meta)
    return paths
