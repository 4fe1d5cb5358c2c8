"""The HTML report as a reader sees it: opened from disk in headless Chromium.

Needs Debian's /usr/bin/chromium (bin/test installs it); without it this test fails
with a message saying so.
"""

import numpy as np
from _browser_util import open_page_check

from fcnet.report import plots
from fcnet.report.render import Figure, Report, Section, Table


def test_report_renders_in_chromium_with_every_figure_and_row(tmp_path):
    rng = np.random.default_rng(0)
    figs = tmp_path / "figs"
    loss = plots.loss_curve(
        2.3 * np.exp(-np.arange(200) / 50) + 0.05 * rng.random(200), figs / "loss.png", smooth=10
    )
    acc = plots.accuracy_curves(
        np.linspace(0.2, 0.5, 10), np.linspace(0.2, 0.45, 10), figs / "acc.png"
    )
    weights = plots.weight_grid(rng.standard_normal((3 * 8 * 8, 12)), (8, 8, 3), figs / "w.png")
    report = Report(
        "Two-layer nets: a browser check",
        [
            Section(
                "Baseline",
                "The baseline reaches **28.4%** with lr `1e-4`.\n\n- loss falls\n- accuracy rises",
                tables=[
                    Table(
                        "Iterations",
                        ["iterations", "val acc (%)"],
                        [[1000, 28.19], [2000, 35.8], [3000, 38.8]],
                        note="held fixed: hidden 50, lr 1e-4",
                    ),
                ],
                figures=[Figure(loss, "Training loss."), Figure(acc, "Accuracy per epoch.")],
            ),
            Section(
                "Hidden units",
                tables=[
                    Table(
                        "Hidden",
                        ["hidden", "val acc (%)"],
                        [[h, 40 + h / 10] for h in range(10, 130, 10)],
                        id="hidden",
                    ),
                    Table(
                        "Batch size",
                        ["batch", "H50", "H100"],
                        [[b, 50.0, 52.0] for b in (100, 200, 300, 400, 500)],
                    ),
                ],
                figures=[Figure(weights, "First-layer weights.")],
            ),
        ],
        meta={"command": "pytest", "seed": 0},
    )
    _, html = report.write(tmp_path / "report")

    page = open_page_check(html)

    assert page["title"] == "Two-layer nets: a browser check"
    assert page["h2"] == ["CONTENTS", "1. Baseline", "2. Hidden units"]
    assert page["n_images"] == 3
    assert page["images_loaded"] == 3, page["image_widths"]
    assert page["console_errors"] == []
    assert page["external_requests"] == []
    assert page["table_rows"] == {
        "meta": 2,
        "baseline-table-1": 3,
        "hidden": 12,
        "hidden-units-table-2": 5,
    }


def test_broken_image_and_script_errors_are_seen(tmp_path):
    # the checker itself must be able to fail: a page with a broken image and a script error
    page_path = tmp_path / "bad.html"
    page_path.write_text(
        "<!DOCTYPE html><html><head><title>bad</title></head><body>"
        '<img src="data:image/png;base64,AAAA">'
        '<table id="t"><thead><tr><th>a</th></tr></thead><tbody><tr><td>1</td></tr></tbody></table>'
        "<script>console.error('boom'); undefinedFunction();</script></body></html>"
    )
    page = open_page_check(page_path)
    assert page["title"] == "bad"
    assert (page["n_images"], page["images_loaded"]) == (1, 0)
    assert any("boom" in e for e in page["console_errors"])
    assert any("undefinedFunction" in e for e in page["console_errors"])
    assert page["table_rows"] == {"t": 1}


_OVERFLOW_JS = """() => Array.from(document.querySelectorAll('table.data')).map(t => {
  const w = t.closest('.table-wrap'), r = t.getBoundingClientRect();
  return [t.id, Math.round(r.right), w.scrollWidth - w.clientWidth];
})"""


def _table_overflow(html, width: int) -> list:
    """[table id, right edge in px, px the table scrolls sideways in its wrap] at ``width``."""
    import shutil
    import tempfile

    from _browser_util import CHROMIUM_ARGS, chromium_path
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="fcnet-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS,
                viewport={"width": width, "height": 900})
            try:
                page = context.new_page()
                page.goto(html.resolve().as_uri(), wait_until="load")
                return page.evaluate(_OVERFLOW_JS)
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_wide_study_table_fits_at_1280_px(tmp_path):
    # Table 7 of the CIFAR-10 study: long row labels, a shown column, and per column value
    # fcnet's mean ± CI, one run's sampling interval and the report's number
    head = ["configuration", "components", "PCA fcnet", "PCA 1 run ±", "PCA report",
            "raw pixels fcnet", "raw pixels 1 run ±", "raw pixels report"]
    rows = [["config 1: H50, batch 200, 1000 it, lr 0.0001, reg 0.25", 217, "24.9 ± 0.6",
             "±2.7", 24.0, "28.4 ± 0.5", "±2.8", "-"],
            ["config 2: H50, batch 400, 5000 it, lr 0.001, reg 0.3", 217, "50.3 ± 0.8",
             "±3.1", 21.6, "51.0 ± 0.7", "±3.1", "-"]]
    note = ("the report's settings, tuned for raw pixels, reused unchanged on PCA inputs; "
            "Beyond noise (Welch t-test over seeds, Holm correction over each column's 1 "
            "pairs, 5% family-wise): PCA: config 2 > config 1; raw pixels: config 2 > config 1.")
    report = Report("Study", [Section("Tables", tables=[
        Table("Table 7: PCA input (95% of variance)", head, rows, note=note, id="t7"),
        Table("Table 4: batch size", ["batch size"] + [f"H{h} {w}" for h in (50, 100) for w in
                                                         ("fcnet", "1 run ±", "report")],
              [[b, "48.1 ± 0.9", "±3.1", 48.8, "52.3 ± 1.1", "±3.1", 49.1]
               for b in (100, 200, 300, 400, 500)], id="t4")])])
    _, html = report.write(tmp_path / "r")
    for table_id, right, scroll in _table_overflow(html, 1280):
        assert right <= 1280 and scroll <= 0, (table_id, right, scroll)
