"""Report text (CommonMark) to safe HTML, by markdown-it-py: raw HTML is escaped (``html:
False``) and ``javascript:`` links and the like stay text (``validateLink``), so run names or
configs cannot inject markup.  Headings start at ``<h3>``: sections are ``<h2>``."""

from __future__ import annotations

from markdown_it import MarkdownIt
from markupsafe import Markup


def _headings_under_sections(state) -> None:
    for token in state.tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{max(3, int(token.tag[1]))}"  # #, ## and ### all sit under the <h2>


_MD = MarkdownIt("commonmark", {"html": False})
_MD.core.ruler.push("headings_under_sections", _headings_under_sections)


def inline(text: str) -> Markup:
    """One line of text (a caption, a table title): inline markup only, no <p>."""
    return Markup(_MD.renderInline(text or ""))


def to_html(text: str) -> Markup:
    """Paragraphs, lists, headings, code blocks and inline markup of ``text``."""
    return Markup(_MD.render(text or "").rstrip("\n"))
