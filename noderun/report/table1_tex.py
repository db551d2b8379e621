"""table1.tex: Table 1 laid out as the paper's (model, test error, parameters, memory, time), with our
measured memory and time where the paper gives complexity classes, narrow enough for one column of
a two-column paper (measured by tests/test_report_unit.py: at most 3.35 in)."""

from __future__ import annotations

import math

import pandas as pd

from noderun.report.tex import tex_escape

# Says what the file needs and what its numbers are, for whoever puts it into a paper.
PREAMBLE = r"""% Table 1 of Chen et al. (2018), Neural ODEs, with our measured values; written by noderun-report.
% Needs \usepackage{booktabs}. Put it into a float, e.g.
%   \begin{table}\centering\input{table1.tex}\caption{...}\end{table}
% Test error: mean $\pm$ sample standard deviation over seeds (seeds per row at each row's end), the
% paper's value in parentheses. Params: millions of trainable parameters. Memory: MiB autograd keeps
% for the backward pass of one training step (measured where the paper gives O(L) or O(1) in depth L),
% "--" where not measured. Time: training seconds per epoch. NFE F/B: function evaluations of the ODE
% block per training batch, forward/backward.
"""
HEADER = [r"& Test error & Params & Memory & Time & NFE \\",
          r"Model & \% (paper) & M & MiB & s/epoch & F/B \\"]
MISSING = "--"


def _known(value: object) -> bool:
    """Return whether a table cell holds a number."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def rounded(value: float) -> str:
    """Return a measurement with one decimal below 100 and none from 100 on ("--" for none)."""
    if not _known(value):
        return MISSING
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def error_cell(row: pd.Series) -> str:
    """Return 'mean $\\pm$ std (paper)' in percent, leaving out what is unknown."""
    text = f"{row['test_error_mean']:.2f}"
    text += rf"$\pm${row['test_error_std']:.2f}" if _known(row["test_error_std"]) else ""
    return text + (f" ({row['paper_test_error']:.2f})" if _known(row["paper_test_error"]) else "")


def nfe_cell(row: pd.Series) -> str:
    """Return 'forward/backward' NFE per training batch, rounded; '--' for a model without an ODE block."""
    if not _known(row["nfe_forward"]):
        return MISSING
    backward = f"{row['nfe_backward']:.0f}" if _known(row["nfe_backward"]) else MISSING
    return f"{row['nfe_forward']:.0f}/{backward}"


def row_label(row: pd.Series, settings: list[str]) -> str:
    """Return the row's model, with the config values that tell its rows apart in parentheses (their
    keys are named once, in a comment: the column has no room for them)."""
    values = [str(row[key]) for key in settings if not pd.isna(row[key])]
    return tex_escape(str(row["model"]) + (f" ({', '.join(values)})" if values else ""))


def settings_comment(settings: list[str]) -> str:
    """Return the comment line naming the config keys whose values follow the model, if any."""
    return f"% In parentheses after a model: {', '.join(settings)}.\n" if settings else ""


def tex_row(row: pd.Series, settings: list[str]) -> str:
    """Return one model's line of the tabular, its number of seeds in a comment at the end."""
    cells = [row_label(row, settings), error_cell(row), f"{row['params_m']:.2f}", rounded(row["saved_mb"]),
             rounded(row["train_time_per_epoch_s"]), nfe_cell(row)]
    return " & ".join(cells) + rf" \\ % {row['seeds']} seed{'s' if row['seeds'] != 1 else ''}"


def paper_layout(table: pd.DataFrame, settings: list[str]) -> str:
    """Return Table 1 (table1()'s rows, in their order) as a compact booktabs tabular in \\footnotesize;
    `settings` are its columns of config values that tell rows apart, shown beside the model."""
    # \footnotesize and 2pt either side of a column (LaTeX's default is 6pt) keep it within one column
    # of a two-column paper (3.3 in) even with three-digit NFE; the @{} drop the outer margins.
    lines = [r"{\footnotesize\setlength{\tabcolsep}{2pt}%", r"\begin{tabular}{@{}lrrrrr@{}}", r"\toprule", *HEADER,
             r"\midrule", *(tex_row(row, settings) for _, row in table.iterrows()), r"\bottomrule",
             r"\end{tabular}}"]
    return PREAMBLE + settings_comment(settings) + "\n".join(lines) + "\n"
