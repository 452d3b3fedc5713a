"""The visible text of an HTML part, in linear time whatever the markup."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

_WS = re.compile(r"\s+")
_TAG = re.compile(r"<[^>]*>")
# html.parser rescans an unterminated tag, comment or quote to the end of the
# input at every '<' (quadratic: 90 KB of "<a " took a minute), so markup is
# first reduced in one linear pass to bare tags: attributes dropped, comments,
# doctypes and processing instructions removed, any other '<' escaped. No run
# crosses a '<' (quoted values included), which is what keeps it linear.
_MARKUP = re.compile(
    r"""<!--.*?(?:-->|\Z)"""
    r"""|<(/?)([a-zA-Z][^\s/<>]*)(?:[^<>"']|"[^"<]*"|'[^'<]*')*>"""
    r"""|<[!?][^<>]*>|<""",
    re.S,
)


class _HTMLText(HTMLParser):
    """The visible text of an HTML part: enough for keyword rules and quoting, no layout."""

    _SKIP = frozenset({"script", "style", "head", "title", "template"})
    _BLOCK = frozenset(
        {
            "p", "br", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
            "ul", "ol", "table", "blockquote", "pre", "hr", "dt", "dd", "address",
            "section", "article", "header", "footer", "form", "fieldset", "figure",
        }
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":  # an unclosed <head> ends here
            self._skip = 0
        if tag in self._SKIP:
            self._skip += 1
        elif tag in self._BLOCK:
            self._parts.append("\n")
        elif tag in ("td", "th"):
            self._parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            if self._skip:
                self._skip -= 1
        elif tag in self._BLOCK and tag not in ("br", "hr"):
            self._parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._parts.append(_WS.sub(" ", data))

    def text(self) -> str:
        return _tidy_lines("".join(self._parts))


def _tidy_lines(text: str) -> str:
    """Collapse spaces within lines and runs of blank lines to one."""
    out: list[str] = []
    blank = False
    for line in text.split("\n"):
        line = " ".join(line.split())
        if not line:
            blank = True
            continue
        if blank and out:
            out.append("")
        out.append(line)
        blank = False
    return "\n".join(out)


def _defang(m: re.Match[str]) -> str:
    if m.group(2) is not None:
        return f"<{m.group(1)}{m.group(2)}>"
    return "&lt;" if m.group() == "<" else ""


def html_to_text(markup: str) -> str:
    parser = _HTMLText()
    try:
        parser.feed(_MARKUP.sub(_defang, markup))
        parser.close()
        return parser.text()
    except Exception:  # html.parser can still assert on odd declarations
        return _tidy_lines(html.unescape(_TAG.sub(" ", markup)))
