"""report.html: the report as one self-contained page (no network; figures embedded as data), so that a
sweep can be looked at, shared or attached without a terminal. Made from what the report has already
written: its printed text (the status line and the tables in Markdown), its PNG figures and the runs
that did not complete."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

# A Markdown table's separator row (|---|---|).
_SEPARATOR = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")
# A cell boundary: a | that the Markdown writer did not escape as \|.
_CELL = re.compile(r"(?<!\\)\|")


def _cells(line: str) -> list[str]:
    """Return a Markdown table row's cells, their escaped pipes restored."""
    return [c.strip().replace("\\|", "|") for c in _CELL.split(line.strip())[1:-1]]


def _table(lines: list[str]) -> str:
    """Return a Markdown table (header, separator, rows) as an HTML table."""
    head, rows = _cells(lines[0]), [_cells(line) for line in lines[1:] if not _SEPARATOR.match(line)]
    header = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def text_as_html(text: str) -> str:
    """Return the report's text as HTML: Markdown tables as tables, other lines as paragraphs, all of
    it escaped (run names and reasons come from files that may be hostile)."""
    parts, table = [], []
    for line in text.splitlines() + [""]:
        if line.lstrip().startswith("|"):
            table.append(line)
            continue
        if table:
            parts.append(_table(table))
            table = []
        if line.strip():
            parts.append(f"<p>{html.escape(line)}</p>")
    return "\n".join(parts)


def _figure(path: Path) -> str:
    """Return a PNG figure as an <img> holding its bytes, under its file name."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.name)
    return f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}</figcaption></figure>'


_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:75em}table{border-collapse:collapse;margin:1em 0}"
          "td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}th{background:#eee}"
          "figure{display:inline-block;margin:.5em}img{max-width:36em}figcaption{font-size:.8em;color:#555}"
          "li{font-family:monospace}")


def report_page(text: str, figures: list[Path], problems: list[str]) -> str:
    """Return report.html: the report's text and tables, every PNG figure embedded, and the runs that
    did not complete (with their reasons)."""
    pngs = "\n".join(_figure(p) for p in sorted(figures) if p.suffix == ".png")
    missing = "".join(f"<li>{html.escape(line)}</li>" for line in problems) or "<li>none</li>"
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>noderun report</title>'
            f"<style>{_STYLE}</style></head><body>\n<h1>noderun report</h1>\n{text_as_html(text)}\n"
            f"<h2>Figures</h2>\n{pngs or '<p>none</p>'}\n<h2>Runs not completed</h2>\n<ul>{missing}</ul>\n"
            f"</body></html>\n")
