"""A report as plain data (sections of text, tables and figures), written by ``Report.write``
as ``report.md`` (figures by relative path, copied under ``figures/`` when elsewhere) and a
self-contained ``report.html``: inline CSS, base64 ``data:`` figures, a Content-Security-Policy
forbidding any request.  Templates: ``templates/report.{html,md}.j2``."""

from __future__ import annotations

import base64
import itertools
import mimetypes
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import numpy as np
from markupsafe import Markup

from fcnet import files
from fcnet.errors import FcnetError
from fcnet.report.markup import inline, to_html

OWN_TABLE_NUMBER = re.compile(r"(?i)^table\s+[\w.-]+\s*[:.]")
_NUMBER = re.compile(r"^[+\-\u2212]?(\d[\d,]*(\.\d*)?|\.\d+)([eE][+\-]?\d+)?\s*%?"
                     r"(\s*(\u00b1|\+/-)\s*(\d[\d,]*(\.\d*)?|\.\d+)([eE][+\-]?\d+)?\s*%?)?$")
_MISSING = {"", "\u2014", "-", "n/a", "nan", "NaN", "inf", "-inf"}
_IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/svg+xml", "image/webp"}
_TEMPLATES = jinja2.Environment(  # report.html.j2 autoescaped, report.md.j2 not
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), trim_blocks=True, lstrip_blocks=True,
    autoescape=jinja2.select_autoescape(["html.j2"]), keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined)


def format_cell(value: Any) -> str:
    """One table value as text: floats to 4 significant digits, None as an em dash; strings
    untouched (a caller who wants ``52.0``, not ``52``, passes text)."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return "0" if value == 0 else f"{float(value):.4g}"  # nan, inf and -inf as themselves
    return str(value)


def format_rows(rows: Sequence[Sequence[Any]]) -> list[list[str]]:
    """Cells of rows (n_rows, n_columns) by ``format_cell``, but a column of floats in [1e-3, 1e5)
    shares the decimals its most precise value needs at 4 digits (``28.19``, ``35.80``)."""
    out = [[format_cell(v) for v in r] for r in rows]
    for j in range(len(rows[0]) if rows else 0):
        values = [r[j] for r in rows if r[j] is not None]
        if not values or not all(isinstance(v, float | np.floating) and
                                 (v == 0 or 1e-3 <= abs(float(v)) < 1e5) for v in values):
            continue
        decimals = max(len(format_cell(v).partition(".")[2]) for v in values)
        for i, r in enumerate(rows):
            if r[j] is not None:
                out[i][j] = f"{float(r[j]):.{decimals}f}"
    return out


def _numeric_columns(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[bool]:
    """Right-align a column when at least one cell is filled and every filled one reads as a
    number (``52.0``, ``1e-3``, ``49,000``, ``53.9%``)."""
    cells = [[c for r in rows if (c := r[j].strip()) not in _MISSING] for j in range(len(columns))]
    return [bool(col) and all(_NUMBER.match(c) for c in col) for col in cells]


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table of rows (n_rows, n_columns) by ``format_rows``; numeric
    columns are right-aligned (``---:``)."""
    cols = [str(c) for c in columns]
    for i, r in enumerate(rows):
        if len(r) != len(cols):
            raise FcnetError(f"markdown_table: row {i} has {len(r)} cells for {len(cols)} columns")
    body = format_rows(rows)
    align = ["---:" if num else "---" for num in _numeric_columns(cols, body)]
    lines = ["| " + " | ".join(_md_escape(c) for c in cols) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in body]
    return "\n".join(lines)


@dataclass
class Table:
    """A table: title (caption), columns, rows (n_rows, len(columns)) of values, a note under it,
    and its HTML id (by default ``<section id>-table-<k>``, k from 1 in the section)."""

    title: str
    columns: list[str]
    rows: list[list]
    note: str = ""
    id: str | None = None

    def __post_init__(self) -> None:
        self.columns = [str(c) for c in self.columns]
        self.rows = [list(r) for r in self.rows]
        for i, r in enumerate(self.rows):
            if len(r) != len(self.columns):
                raise FcnetError(f"table {self.title!r}: row {i} has {len(r)} cells, "
                                 f"expected {len(self.columns)} ({', '.join(self.columns)})")


@dataclass
class Figure:
    """An image file (PNG from ``fcnet.report.plots``, or JPEG/GIF/SVG/WebP) and its caption."""

    path: Path
    caption: str

    def __post_init__(self) -> None:
        self.path = Path(self.path)


@dataclass
class Section:
    """A titled part of the report: Markdown-ish text, then its tables, then its figures."""

    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    id: str | None = None


def slugify(text: str) -> str:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    s = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
    return s or "section"


def _unique(own: str | None, default: str, taken: set[str], what: str) -> str:
    """The id ``own`` (an error when taken), else ``default`` made unique by -1, -2, ..."""
    if own is not None and own in taken:
        raise FcnetError(f"report {what}: id {own!r} is used twice")
    base = own or default
    names = itertools.chain([base], (f"{base}-{k}" for k in itertools.count(1)))
    name = next(n for n in names if n not in taken)
    taken.add(name)
    return name


def _data_uri(path: Path) -> Markup:
    """A figure as a base64 ``data:`` URI, with a clear error for a missing or odd file."""
    if not path.is_file():
        raise FcnetError(f"report figure {path}: file not found")
    mime = mimetypes.guess_type(path.name)[0]
    if mime not in _IMAGE_TYPES:
        raise FcnetError(f"report figure {path}: not an image type a browser shows ({mime})")
    data = path.read_bytes()
    if mime == "image/png" and not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise FcnetError(f"report figure {path}: not a valid PNG file")
    return Markup(f"data:{mime};base64,{base64.b64encode(data).decode()}")


def _md_reference(path: Path, out_dir: Path, copied: dict[Path, str], reserved: set[str]) -> str:
    """Relative link from report.md to a figure; one outside out_dir is copied in first, never
    over a figure already inside it (``reserved``: their relative paths)."""
    src, out = path.resolve(), out_dir.resolve()
    if src.is_relative_to(out):
        return quote(src.relative_to(out).as_posix())
    if src not in copied:
        taken = reserved | set(copied.values())
        names = (f"figures/{src.stem}-{k}{src.suffix}" for k in itertools.count(2))
        rel = next(r for r in itertools.chain([f"figures/{src.name}"], names) if r not in taken)
        data = src.read_bytes()
        files.atomic_write(out / rel, lambda f: f.write(data))
        copied[src] = rel
    return quote(copied[src])


@dataclass
class Report:
    """A titled list of sections plus ``meta`` (shown as a key/value table at the top)."""

    title: str
    sections: list[Section]
    meta: dict[str, Any] = field(default_factory=dict)

    def write(self, out_dir: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``report.md`` and ``report.html`` into ``out_dir``: (md path, html path).
        Table and figure numbers run through the whole report."""
        from fcnet import __version__

        out_dir = files.ensure_dir(out_dir)
        ids: set[str] = {"contents", "meta"}
        copied: dict[Path, str] = {}
        inside = [f.path.resolve() for s in self.sections for f in s.figures]
        reserved = {p.relative_to(out_dir.resolve()).as_posix() for p in inside
                    if p.is_relative_to(out_dir.resolve())}
        n_table, n_figure = itertools.count(1), itertools.count(1)
        sections = []
        for s in self.sections:
            sid = _unique(s.id, slugify(s.title), ids, f"section {s.title!r}")
            tables = [dict(
                id=_unique(t.id, f"{sid}-table-{k}", ids, f"table {t.title!r}"), number=next(n_table),
                # a title with the source's own numbering ("Table 1: iterations") keeps it alone
                own_number=bool(OWN_TABLE_NUMBER.match(t.title)),
                title=t.title, title_html=inline(t.title), note=t.note, note_html=inline(t.note),
                columns=t.columns, rows=(cells := format_rows(t.rows)),
                numeric=_numeric_columns(t.columns, cells), markdown=markdown_table(t.columns, t.rows))
                for k, t in enumerate(s.tables, start=1)]
            figures = [dict(number=next(n_figure), caption=f.caption, caption_html=inline(f.caption),
                            data_uri=_data_uri(f.path), src=_md_reference(f.path, out_dir, copied, reserved))
                       for f in s.figures]
            sections.append(dict(id=sid, title=s.title, text=s.text.strip(), text_html=to_html(s.text),
                                 tables=tables, figures=figures))
        meta = [(str(k), format_cell(v)) for k, v in self.meta.items()]
        context = dict(title=self.title, meta=meta, sections=sections, version=__version__,
                       written=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
        md = re.sub(r"\n{3,}", "\n\n", _TEMPLATES.get_template("report.md.j2").render(context)).strip() + "\n"
        html = _TEMPLATES.get_template("report.html.j2").render(context)
        return files.write_text(out_dir / "report.md", md), files.write_text(out_dir / "report.html", html)
