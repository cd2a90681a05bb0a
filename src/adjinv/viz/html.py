"""A self-contained HTML page over the PNGs and numbers of a run."""

from __future__ import annotations

import html
from collections.abc import Sequence
from urllib.parse import quote

# Defence in depth: the page never needs a script, so the browser runs none, even
# if a name slipped through unescaped.
_CSP = "script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'"


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def href(path: str) -> str:
    """A relative file path as a URL: every segment percent-encoded (so that ``#``,
    ``?``, ``%`` and spaces in file names stay part of the path), then HTML-escaped."""
    return html.escape(quote(path, safe="/"), quote=True)


def figure(src: str, caption: str) -> str:
    """One captioned image; ``src`` is a relative file path (encoded here)."""
    cap = html.escape(caption, quote=True)
    return (f'<figure><img src="{href(src)}" alt="{cap}" loading="lazy">'
            f"<figcaption>{cap}</figcaption></figure>")


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A small HTML table."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, sections: Sequence[str], intro: str = "") -> str:
    """The whole page. ``title`` is escaped here; ``sections`` and ``intro`` are HTML
    whose every user-supplied field the caller has escaped."""
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
             "figure{display:inline-block;margin:4px;text-align:center;vertical-align:top}"
             "figure img{width:160px;height:160px;image-rendering:pixelated}"
             "figcaption{font-size:12px;max-width:160px}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
             "padding:2px 8px;font-size:13px}section{border-top:1px solid #ddd;margin-top:1.5em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\"><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            f"{intro}{''.join(sections)}</body></html>\n")
