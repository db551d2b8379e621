"""`noderun experiment=solver_accuracy`: torchdiffeq's solvers against the exact solution of the seed
document 001's test equation, dy/dt = y - 1/2 e^{t/2} sin 5t + 5 e^{t/2} cos 5t, y(0) = 0, whose
solution is y = e^{t/2} sin 5t (the example of its Figure 2, Euler against Runge-Kutta)."""

from __future__ import annotations

import logging
import math
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig
from torch import nn

from noderun.errors import UserError
from noderun.run.recorder import RunRecorder
from noderun.solvers import METHODS, SolveStats, SolverSpec, integrate, task_solver
from noderun.experiments.common import task_settings

log = logging.getLogger("noderun")

CSV_FILE = "solver_accuracy.csv"


class TestEquation(nn.Module):
    """f(t, y) = y - 1/2 e^{t/2} sin 5t + 5 e^{t/2} cos 5t."""

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        growth = torch.exp(t / 2)
        return y - 0.5 * growth * torch.sin(5 * t) + 5 * growth * torch.cos(5 * t)


def exact_solution(t: torch.Tensor) -> torch.Tensor:
    """Return y(t) = e^{t/2} sin 5t."""
    return torch.exp(t / 2) * torch.sin(5 * t)


def cases(cfg: DictConfig) -> list[SolverSpec]:
    """Return the validated solvers to compare: each fixed-grid method at each step size, each
    adaptive one at each tolerance (rtol = atol), each on the run's solve path where it has the method
    (noderun.solvers.task_solver); raise UserError for an unknown method."""
    settings = task_settings(cfg)
    specs = []
    for method in settings.methods:
        if method not in METHODS or method == "scipy_solver":
            raise UserError(f"solver_accuracy.methods: unknown method {method!r}; choose from: "
                            f"{', '.join(m for m in METHODS if m != 'scipy_solver')}")
        if SolverSpec(method=method).fixed_grid:
            specs += [task_solver(cfg, method, step_size=float(h)) for h in settings.step_sizes]
        else:
            specs += [task_solver(cfg, method, float(tol), float(tol)) for tol in settings.tolerances]
    if not specs:
        raise UserError("solver_accuracy.methods is empty; give methods such as [euler,rk4,dopri5]")
    return specs


def solve(spec: SolverSpec, times: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Return the solution at `times` (float64) and the number of function evaluations it took."""
    stats = SolveStats()
    with torch.no_grad():
        solution = integrate(TestEquation(), torch.zeros(1, dtype=torch.float64), times, spec, adjoint=False,
                             stats=stats)[:, 0]
    return solution, stats.evaluations["forward"]


def case_row(spec: SolverSpec, times: torch.Tensor, exact: torch.Tensor) -> dict[str, Any]:
    """Return one solver's errors against the exact solution, on the output grid, with its NFE."""
    solution, nfe = solve(spec, times)
    error = (solution - exact).abs()
    return {"method": spec.method, "solver_path": spec.path,
            "step_size": spec.step_size if spec.fixed_grid else None,
            "tol": None if spec.fixed_grid else spec.rtol, "nfe": nfe,
            "max_abs_error": float(error.max()), "final_abs_error": float(error[-1]),
            "rms_error": float(error.pow(2).mean().sqrt())}


def markdown_table(table: pd.DataFrame, t_end: float) -> str:
    """Return the errors as a Markdown table, one row per method and step size or tolerance."""
    lines = [f"Errors against y = e^(t/2) sin 5t on [0, {t_end:g}] (maximum over the output grid, and at t = {t_end:g}).",
             "", "| method | step size | tolerance | NFE | max abs error | error at end |", "|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        step = "" if pd.isna(r["step_size"]) else f"{r['step_size']:g}"
        tol = "" if pd.isna(r["tol"]) else f"{r['tol']:g}"
        lines.append(f"| {r['method']} | {step} | {tol} | {r['nfe']} | {r['max_abs_error']:.3g} | {r['final_abs_error']:.3g} |")
    return "\n".join(lines) + "\n"


def run(cfg: DictConfig, rec: RunRecorder) -> None:
    """Write solver_accuracy.csv and .md (errors and NFE per solver) and the figure."""
    run_dir, summary = rec.run_dir, rec.summary
    from noderun.plotting.tasks import solver_accuracy_figure  # matplotlib only once needed

    settings = task_settings(cfg)
    t_end = float(settings.t_end)
    if not math.isfinite(t_end) or t_end <= 0:
        raise UserError(f"solver_accuracy.t_end={settings.t_end} is invalid; use a number > 0")
    # An output grid on the step sizes' common multiples compares the solvers at their own steps,
    # not at points a fixed-grid solver interpolates between.
    times = torch.linspace(0, t_end, int(settings.output_points), dtype=torch.float64)
    exact = exact_solution(times)
    specs = cases(cfg)
    rows = []
    for spec in specs:
        rows.append(case_row(spec, times, exact))
        log.info("solver_accuracy %s %s: NFE %d, max error %.3g", spec.method,
                 spec.step_size if spec.fixed_grid else spec.rtol, rows[-1]["nfe"], rows[-1]["max_abs_error"])
    table = pd.DataFrame(rows)
    rec.write_file(CSV_FILE, table)
    rec.write_file("solver_accuracy.md", markdown_table(table, t_end))
    shown = [task_solver(cfg, str(m), step_size=float(settings.figure_step_size)) for m in settings.figure_methods]
    curves = {f"{s.method}, h = {s.step_size:g}": solve(s, times)[0] for s in shown}
    fine = torch.linspace(0, t_end, 1001, dtype=torch.float64)
    figure = solver_accuracy_figure((fine, exact_solution(fine)), times, curves, table, run_dir)
    rec.add_files(*(p.name for p in figure))
    summary.update(t_end=t_end, methods=list(settings.methods),
                   solver_path={str(m): task_solver(cfg, str(m)).path for m in settings.methods})
