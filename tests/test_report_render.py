"""The report renderer: Markdown and self-contained HTML from sections, tables and figures."""

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from fcnet.errors import FcnetError
from fcnet.report import plots
from fcnet.report.markup import inline, to_html
from fcnet.report.render import (
    Figure,
    Report,
    Section,
    Table,
    format_cell,
    format_rows,
    markdown_table,
)


class Outline(HTMLParser):
    """Collects what the tests look at: ids, img srcs, links, and rows per table section."""

    def __init__(self):
        super().__init__()
        self.ids, self.imgs, self.hrefs, self.tags = [], [], [], []
        self.rows: dict[str, dict[str, int]] = {}
        self._table, self._part = None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "img":
            self.imgs.append(a["src"])
        if tag == "a":
            self.hrefs.append(a.get("href"))
        if tag == "table":
            self._table = a.get("id")
            self.rows[self._table] = {"thead": 0, "tbody": 0}
        if tag in ("thead", "tbody"):
            self._part = tag
        if tag == "tr" and self._table and self._part:
            self.rows[self._table][self._part] += 1


def outline(html: str) -> Outline:
    o = Outline()
    o.feed(html)
    return o


@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("figs")
    return {
        "loss": plots.loss_curve(np.linspace(2.3, 1.5, 50), d / "loss.png"),
        "acc": plots.accuracy_curves([0.2, 0.3, 0.4], [0.2, 0.25, 0.3], d / "acc.png"),
    }


def small_report(figures) -> Report:
    return Report(
        "Study <of> nets",
        [
            Section(
                "Baseline run",
                "Validation accuracy is **28.4%**; the lr was `1e-4`.\n\n- one\n- two <b>x</b>",
                tables=[
                    Table(
                        "Iterations",
                        ["iterations", "val acc (%)", "note"],
                        [[1000, 28.19, "baseline"], [2000, 35.8, None]],
                        note="hidden 50",
                    ),
                ],
                figures=[Figure(figures["loss"], "Loss per iteration.")],
            ),
            Section(
                "Hidden units",
                tables=[
                    Table(
                        "Hidden",
                        ["hidden", "val acc"],
                        [[h, 40 + h / 10] for h in range(10, 130, 10)],
                        id="table-hidden",
                    ),
                    Table("Empty", ["a"], []),
                ],
                figures=[Figure(figures["acc"], "Accuracy."), Figure(figures["loss"], "Again.")],
            ),
        ],
        meta={"command": "fcnet study --quick", "seed": 0},
    )


def test_write_returns_both_files_in_out_dir(tmp_path, figures):
    md, html = small_report(figures).write(tmp_path / "out")
    assert (md, html) == (tmp_path / "out" / "report.md", tmp_path / "out" / "report.html")
    assert md.read_text().startswith("# Study <of> nets\n")
    assert "<title>Study &lt;of&gt; nets</title>" in html.read_text()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "figures",
        "report.html",
        "report.md",
    ]


def test_html_tables_have_header_and_one_body_row_per_row(tmp_path, figures):
    _, html = small_report(figures).write(tmp_path)
    o = outline(html.read_text())
    assert o.rows == {
        "meta": {"thead": 0, "tbody": 2},
        "baseline-run-table-1": {"thead": 1, "tbody": 2},
        "table-hidden": {"thead": 1, "tbody": 12},
        "hidden-units-table-2": {"thead": 1, "tbody": 0},
    }


def test_html_is_self_contained(tmp_path, figures):
    _, html = small_report(figures).write(tmp_path)
    text = html.read_text()
    o = outline(text)
    assert "link" not in o.tags and "script" not in o.tags
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "url(" not in text  # no fonts or images pulled in by CSS
    # each <img> carries its PNG as a data: URI, byte for byte
    assert len(o.imgs) == 3
    expected = [figures["loss"], figures["acc"], figures["loss"]]
    for src, path in zip(o.imgs, expected, strict=True):
        head, data = src.split(",", 1)
        assert head == "data:image/png;base64"
        assert base64.b64decode(data) == path.read_bytes()
    assert "default-src 'none'" in text  # the browser itself refuses any fetch


def test_table_of_contents_links_every_section(tmp_path, figures):
    md, html = small_report(figures).write(tmp_path)
    o = outline(html.read_text())
    assert ["#baseline-run", "#hidden-units"] == [h for h in o.hrefs if h.startswith("#")]
    assert {"contents", "baseline-run", "hidden-units"} <= set(o.ids)
    assert len(o.ids) == len(set(o.ids))
    assert "1. [Baseline run](#baseline-run)\n2. [Hidden units](#hidden-units)" in md.read_text()


def test_numbers_are_right_aligned_and_text_is_not(tmp_path, figures):
    _, html = small_report(figures).write(tmp_path)
    text = html.read_text()
    assert '<th scope="col" class="num">iterations</th>' in text
    assert '<th scope="col">note</th>' in text
    assert '<td class="num">28.19</td>' in text and "<td>baseline</td>" in text


def test_tables_and_figures_are_numbered_through_the_report(tmp_path, figures):
    md, html = small_report(figures).write(tmp_path)
    text = html.read_text()
    for label in ("Table 1.", "Table 2.", "Table 3.", "Figure 1.", "Figure 2.", "Figure 3."):
        assert label in text
    assert "Figure 4." not in text
    assert "**Figure 3.** Again." in md.read_text()


def test_user_text_is_escaped_in_html(tmp_path, figures):
    _, html = small_report(figures).write(tmp_path)
    text = html.read_text()
    assert "two &lt;b&gt;x&lt;/b&gt;" in text
    assert "<strong>28.4%</strong>" in text and "<code>1e-4</code>" in text


def test_markdown_references_figures_that_exist(tmp_path, figures):
    md, _ = small_report(figures).write(tmp_path / "out")
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md.read_text())
    # figures from elsewhere are copied in once each, under figures/
    assert refs == ["figures/loss.png", "figures/acc.png", "figures/loss.png"]
    for r in refs:
        assert (md.parent / r).read_bytes().startswith(b"\x89PNG")


def test_figures_already_in_out_dir_are_linked_not_copied(tmp_path):
    out = tmp_path / "out"
    inside = plots.loss_curve([3.0, 2.0, 1.0], out / "figures" / "loss.png")
    other = plots.loss_curve([1.0, 2.0, 3.0], tmp_path / "elsewhere" / "loss.png")
    report = Report("r", [Section("s", figures=[Figure(inside, "a"), Figure(other, "b")])])
    md, _ = report.write(out)
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md.read_text())
    assert refs == ["figures/loss.png", "figures/loss-2.png"]  # the copy does not overwrite
    assert (out / "figures" / "loss.png").read_bytes() == inside.read_bytes()
    assert (out / "figures" / "loss-2.png").read_bytes() == other.read_bytes()


def test_markdown_has_the_tables(tmp_path, figures):
    md, _ = small_report(figures).write(tmp_path)
    text = md.read_text()
    assert (
        "| iterations | val acc (%) | note |\n| ---: | ---: | --- |\n| 1000 | 28.19 | baseline |"
        in text
    )
    assert "*hidden 50*" in text


def test_row_of_wrong_length_names_the_table():
    with pytest.raises(FcnetError, match=r"table 'Iterations': row 1 has 1 cells, expected 2"):
        Table("Iterations", ["a", "b"], [[1, 2], [3]])


def test_missing_figure_is_a_clear_error(tmp_path):
    report = Report("r", [Section("s", figures=[Figure(tmp_path / "nope.png", "x")])])
    with pytest.raises(FcnetError, match=r"nope.png: file not found"):
        report.write(tmp_path / "out")


def test_duplicate_ids_are_refused(tmp_path):
    report = Report("r", [Section("a", id="x"), Section("b", id="x")])
    with pytest.raises(FcnetError, match="id 'x' is used twice"):
        report.write(tmp_path)


def test_same_titles_get_distinct_ids(tmp_path):
    _, html = Report("r", [Section("Run"), Section("Run")]).write(tmp_path)
    assert {"run", "run-1"} <= set(outline(html.read_text()).ids)


def test_no_temporary_files_are_left(tmp_path, figures):
    small_report(figures).write(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "value, text",
    [
        (None, "\u2014"),
        (True, "yes"),
        (3, "3"),
        (np.int64(49000), "49000"),
        (0.28400001, "0.284"),
        (1e-4, "0.0001"),
        (2.5e-6, "2.5e-06"),
        (52.0, "52"),
        (float("nan"), "nan"),
        ("52.0", "52.0"),
        (np.float32(0.5), "0.5"),
    ],
)
def test_format_cell(value, text):
    assert format_cell(value) == text


def test_markdown_table_aligns_numbers_and_escapes_pipes():
    out = markdown_table(
        ["name", "acc", "std"], [["a|b", 52.0, "\u00b1 0.3"], ["c", "53.9%", None]]
    )
    assert out.splitlines() == [
        "| name | acc | std |",
        "| --- | ---: | --- |",
        "| a\\|b | 52 | \u00b1 0.3 |",
        "| c | 53.9% | \u2014 |",
    ]


def squeeze(html) -> str:
    """HTML without the line breaks between tags and before closing ones, runs of
    whitespace as one space: how a browser shows it."""
    html = re.sub(r"\n(?=</)", "", re.sub(r">\s+<", "><", str(html)))
    return re.sub(r"\s+", " ", html).strip()


def test_markup_subset():
    html = to_html(
        "Intro *x* and **y**\nwraps.\n\n1. first\n2. second\n\n```\na < b\n```\n# Top\n### Head"
    )
    assert squeeze(html) == (
        "<p>Intro <em>x</em> and <strong>y</strong> wraps.</p>"
        "<ol><li>first</li><li>second</li></ol>"
        "<pre><code>a &lt; b</code></pre>"
        "<h3>Top</h3><h3>Head</h3>"  # headings sit under the section's <h2>
    )


def test_raw_html_in_text_is_escaped():
    assert "<script" not in str(to_html("a <script>alert(1)</script> b"))
    assert str(inline("two <b>x</b>")) == "two &lt;b&gt;x&lt;/b&gt;"


def test_markup_links_only_safe_urls():
    html = str(to_html("[ok](https://example.org) [no](javascript:alert(1)) [in](#sec)"))
    assert '<a href="https://example.org">ok</a>' in html
    assert '<a href="#sec">in</a>' in html
    assert "javascript" not in re.findall(r'href="([^"]*)"', html)[1]
    assert html.count("<a ") == 2


def test_code_spans_are_verbatim():
    assert squeeze(to_html("`**not bold**` and `a<b`")) == (
        "<p><code>**not bold**</code> and <code>a&lt;b</code></p>"
    )


def test_a_column_of_floats_shares_its_decimals():
    rows = [[1000, 28.19, 0.284, 1e-4], [2000, 35.8, 0.52, 1e-3], [3000, 38.0, None, 2.5e-6]]
    assert format_rows(rows) == [
        ["1000", "28.19", "0.284", "0.0001"],
        ["2000", "35.80", "0.520", "0.001"],
        ["3000", "38.00", "\u2014", "2.5e-06"],  # tiny values keep their own 4 digits
    ]


def test_a_title_with_its_own_table_number_is_not_numbered_again(tmp_path):
    report = Report("r", [Section("s", tables=[
        Table("Overview", ["a"], [[1]]),
        Table("Table 1: iterations", ["a"], [[2]]),
    ])])
    md, html = report.write(tmp_path)
    md_text, html_text = md.read_text(), html.read_text()
    assert "**Table 1.** Overview" in md_text
    assert "**Table 1: iterations**" in md_text and "Table 2. Table 1" not in md_text
    assert "Table 2.</span> Table 1" not in html_text and "Table 1: iterations" in html_text
