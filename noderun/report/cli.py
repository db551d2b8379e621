"""The `noderun-report` command: Tables 1 and 2 and Figure 3 from any set of run directories."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from noderun.safeio import printable
from noderun.report.collect import RunSet, collect_runs
from noderun.errors import UserError
from noderun.plugins import load_plugins
from noderun.report.figures import write_figures
from noderun.report.folder import report_folder
from noderun.report.html import report_page
from noderun.report.table import table1_text, write_runs_csv
from noderun.report.flows import density_text, likelihood_text
from noderun.report.table2 import table2_text

# The report's tables, keyed like noderun.experiments.EXPERIMENTS (the task whose runs each reads), in
# the order they are printed: each writes its files from the runs and returns its text (None: no runs).
TABLES = {"train": table1_text, "timeseries": table2_text, "cnf_density": density_text, "cnf_mle": likelihood_text}


# A reason is cut to this many characters: a not_completed.txt line names a run, it is no log.
MAX_REASON = 300


def _reason(value: object) -> str:
    """Return a recorded reason as one short line ('no reason recorded' for none)."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or not str(value).strip():
        return "no reason recorded"
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_REASON else text[:MAX_REASON] + "..."


def _line(run_dir: object, status: object, reason: object) -> str:
    """Return 'RUN_DIR: STATUS (REASON)' on one line of printable characters, whatever the run's name
    and files hold (a newline would split it, a terminal escape sequence act on the terminal)."""
    return printable(f"{run_dir}: {status} ({_reason(reason)})")


def not_completed_lines(run_set: RunSet) -> list[str]:
    """Return one line per run that is left out of the means: its status and reason; runs whose
    files cannot be used are 'unreadable', with what is wrong."""
    runs = run_set.runs
    lines = []
    if len(runs):
        lines += [_line(run["run_dir"], run["status"], run.get("reason"))
                  for _, run in runs[runs["status"] != "completed"].iterrows()]
    lines += [_line(task["run_dir"], task["status"], task.get("reason"))
              for task in run_set.tasks if task["status"] != "completed"]
    return lines + [_line(run_dir, "unreadable", why) for run_dir, why in run_set.unreadable]


def status_counts(run_set: RunSet) -> str:
    """Return e.g. '7 completed, 1 failed, 0 interrupted, 0 running, 0 unreadable' (runs and tasks)."""
    statuses = pd.Series(list(run_set.runs["status"]) if len(run_set.runs) else [], dtype=object)
    statuses = pd.concat([statuses, pd.Series([t.get("status") for t in run_set.tasks], dtype=object)]).value_counts()
    counts = [f"{int(statuses.get(s, 0))} {s}" for s in ("completed", "failed", "interrupted", "running")]
    return ", ".join(counts + [f"{len(run_set.unreadable)} unreadable"])


def build_report(paths: list[Path], out_dir: Path, tags: tuple[str, ...] = ()) -> tuple[str, RunSet]:
    """Write runs.csv, table1.{csv,md,tex}, table2.{csv,md,tex} (where there are such runs), not_completed.txt, the figures and report.html to out_dir; return the text
    to print and the runs. Raises LookupError when the paths hold no runs at all, and UserError, changing
    nothing, when out_dir holds files the report did not write (noderun.report.folder). With tags, only
    the runs carrying all of them are reported."""
    run_set = collect_runs(paths, tags)
    if run_set.runs.empty and not run_set.unreadable and not run_set.tasks:
        tagged = f" tagged {', '.join(tags)}" if tags else ""
        raise LookupError(f"no runs{tagged} found under {', '.join(map(str, paths))}"
                          + ("" if tags else " (no summary.json below them)"))
    problems = not_completed_lines(run_set)
    with report_folder(out_dir) as drawing:  # only the report's own earlier files are replaced
        (drawing / "not_completed.txt").write_text("".join(line + "\n" for line in problems))
        write_runs_csv(run_set, drawing)
        texts = [text for write in TABLES.values() if (text := write(run_set, drawing)) is not None]
        text = "\n\n".join(texts) or "(no completed runs: no table)"
        figures = write_figures(run_set, drawing)
        selected = f" tagged {', '.join(tags)}" if tags else ""
        lines = [f"{status_counts(run_set)}{selected}; report in {out_dir} ({len(figures)} figure files)", text]
        (drawing / "report.html").write_text(report_page("\n".join(lines), figures, problems), encoding="utf-8")
    if problems:
        lines += ["not completed (left out of the means):", *problems]
    return "\n".join(lines), run_set


def main(argv: list[str] | None = None) -> None:
    """Entry point of `noderun-report PATH... [--out DIR]`."""
    parser = argparse.ArgumentParser(prog="noderun-report", description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, or folders above them (a sweep, outputs/)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: FIRST_PATH/report)")
    parser.add_argument("--tags", default="", help="only the runs carrying all of these tags (comma-separated: paper,v2)")
    args = parser.parse_args(argv)
    try:
        load_plugins()  # a plugin's model has its label and colour in the registry the tables read
    except UserError as err:
        print(f"noderun-report: error: {err}", file=sys.stderr)
        sys.exit(2)
    tags = tuple(t for t in args.tags.split(",") if t)
    missing = [p for p in args.paths if not p.is_dir()]
    if missing:
        print(f"noderun-report: error: {missing[0]} is not a directory", file=sys.stderr)
        sys.exit(2)
    out_dir = args.out or args.paths[0] / "report"
    try:
        text, _ = build_report(args.paths, out_dir, tags)
    except LookupError as err:
        print(f"noderun-report: error: {printable(str(err))}", file=sys.stderr)
        sys.exit(1)
    except UserError as err:
        print(f"noderun-report: error: {printable(str(err))}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        print(f"noderun-report: error: cannot write the report to {out_dir}: {err.strerror or err}", file=sys.stderr)
        sys.exit(2)
    print_to_pipe(text)


def print_to_pipe(text: str) -> None:
    """Print text; a reader that stops early (`noderun-report D | head -1`) ends the printing quietly."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python would report the pipe again when it flushes stdout at exit: point stdout at nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    main()
