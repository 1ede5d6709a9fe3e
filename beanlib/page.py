"""The report as one structure of headings, paragraphs, tables and figures, written as Markdown and as
self-contained HTML (figures inlined), so the two never disagree."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd


class Doc:
    """A report page: add blocks in order, then write it as Markdown or HTML."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, frame: pd.DataFrame) -> None:
        self.blocks.append(("table", frame))

    def figure(self, path: Path, caption: str) -> None:
        self.blocks.append(("figure", path, caption))

    def to_markdown(self) -> str:
        out = []
        for kind, *rest in self.blocks:
            if kind == "h":
                out.append("#" * rest[0] + " " + rest[1])
            elif kind == "p":
                out.append(rest[0])
            elif kind == "table":
                frame = rest[0].astype(str).replace({"nan": "", "None": ""})
                cells = lambda values: "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"  # noqa: E731
                out.append("\n".join([cells(frame.columns), cells(["---"] * len(frame.columns)), *map(cells, frame.to_numpy())]))
            else:
                out.append(f"![{rest[1]}](figures/{rest[0].name})\n\n*{rest[1]}*")
        return "\n\n".join(out) + "\n"

    def to_html(self, root: Path) -> str:
        body = []
        for kind, *rest in self.blocks:
            if kind == "h":
                body.append(f"<h{rest[0]}>{_inline(rest[1])}</h{rest[0]}>")
            elif kind == "p":
                body.append(f"<p>{_inline(rest[0])}</p>")
            elif kind == "table":
                body.append(rest[0].astype(str).replace({"nan": "", "None": ""}).to_html(index=False, border=0, escape=True))
            else:
                data = base64.b64encode((root / "figures" / rest[0].name).read_bytes()).decode()
                body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(rest[1])}">'
                            f"<figcaption>{html.escape(rest[1])}</figcaption></figure>")
        style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
                 "table{border-collapse:collapse;margin:1em 0}td,th{padding:3px 9px;border-bottom:1px solid #ddd;text-align:left}"
                 "img{max-width:100%}figcaption{color:#555;font-style:italic}")
        title = re.sub("<[^>]+>", "", _inline(self.blocks[0][2])) if self.blocks else "beanlib report"
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head>"
                f"<body>{''.join(body)}</body></html>\n")


def _inline(text: str) -> str:
    """Markdown's **bold** and `code` in HTML, everything else escaped."""
    import re

    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)
