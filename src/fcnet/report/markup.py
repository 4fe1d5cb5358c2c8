"""The small Markdown subset that report text uses, turned into safe HTML.

Blocks: paragraphs (separated by blank lines), ``-``/``*`` and ``1.`` lists, ``###``
headings and fenced code.  Inline: `code`, **bold**, *italic* and [links](url).
Everything else is escaped, so text from run names or configs cannot inject markup.
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape

_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_SAFE_URL = re.compile(r"^(https?://|#|\.{0,2}/|[\w.-]+(/|$|#))", re.IGNORECASE)
_BULLET = re.compile(r"^\s{0,3}[-*]\s+(.*)$")
_NUMBERED = re.compile(r"^\s{0,3}\d+[.)]\s+(.*)$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*$")


def inline(text: str) -> Markup:
    """Escape ``text`` and apply the inline rules; code spans are left verbatim."""
    codes: list[str] = []

    def stash(m: re.Match) -> str:
        codes.append(f"<code>{m.group(1)}</code>")
        return f"\x00{len(codes) - 1}\x00"

    s = _CODE.sub(stash, str(escape(text)))  # escaped first, so code spans hold no markup

    def link(m: re.Match) -> str:
        label, url = m.group(1), m.group(2)
        if not _SAFE_URL.match(url):  # javascript: and friends stay text
            return m.group(0)
        return f'<a href="{url}">{label}</a>'

    s = _LINK.sub(link, s)
    s = _BOLD.sub(r"<strong>\1</strong>", s)
    s = _ITALIC.sub(r"<em>\1</em>", s)
    s = re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], s)
    return Markup(s)


def to_html(text: str) -> Markup:
    """Render the block structure of ``text``; headings are <h3> or deeper (sections are <h2>)."""
    out: list[str] = []
    para: list[str] = []
    items: list[str] = []
    list_tag = ""
    code: list[str] | None = None

    def flush() -> None:
        nonlocal list_tag
        if para:
            out.append(f"<p>{inline(' '.join(para))}</p>")
            para.clear()
        if items:
            lis = "".join(f"<li>{inline(i)}</li>" for i in items)
            out.append(f"<{list_tag}>{lis}</{list_tag}>")
            items.clear()
            list_tag = ""

    for line in (text or "").splitlines():
        if code is not None:
            if line.strip().startswith("```"):
                out.append(f"<pre><code>{escape(chr(10).join(code))}</code></pre>")
                code = None
            else:
                code.append(line)
            continue
        if line.strip().startswith("```"):
            flush()
            code = []
            continue
        if not line.strip():
            flush()
            continue
        bullet, numbered, heading = _BULLET.match(line), _NUMBERED.match(line), _HEADING.match(line)
        if heading and not items:
            flush()
            level = max(3, len(heading.group(1)))  # #, ## and ### all sit under the <h2>
            out.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif bullet or numbered:
            tag = "ul" if bullet else "ol"
            if para or (items and tag != list_tag):
                flush()
            list_tag = tag
            items.append((bullet or numbered).group(1))
        elif items and line[:1].isspace():  # an indented line continues the list item
            items[-1] += " " + line.strip()
        else:
            if items:
                flush()
            para.append(line.strip())
    if code is not None:  # an unclosed fence still shows its contents
        out.append(f"<pre><code>{escape(chr(10).join(code))}</code></pre>")
    flush()
    return Markup("\n".join(out))
