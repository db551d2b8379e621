"""LaTeX for the report's tables: escaping text, and a plain booktabs tabular from display rows."""

from __future__ import annotations

import re

# LaTeX's special characters, and the table's own symbols, as LaTeX writes them.
TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{",
               "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "L̃": r"$\tilde{L}$"}
TEX_SPECIAL = re.compile("|".join(map(re.escape, sorted(TEX_ESCAPES, key=len, reverse=True))))


def tex_escape(text: str) -> str:
    """Return text with LaTeX's special characters escaped (in one pass, so no escape is escaped again)."""
    return TEX_SPECIAL.sub(lambda match: TEX_ESCAPES[match.group()], text)


def latex(rows: list[dict[str, str]]) -> str:
    """Return display rows as a LaTeX tabular (booktabs rules)."""
    headers = list(rows[0])
    lines = [r"\begin{tabular}{l" + "r" * (len(headers) - 1) + "}", r"\toprule",
             " & ".join(tex_escape(h) for h in headers) + r" \\", r"\midrule"]
    lines += [" & ".join(tex_escape(row[h]) for h in headers) + r" \\" for row in rows]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"
