"""The paper's own figures, to print beside ours (Chen et al. 2018; see shared REFERENCE.md), as the
model registry (noderun.models.MODELS) holds them."""

from __future__ import annotations

import math

from noderun.models import MODELS


def paper_table1(model: str) -> dict:
    """Return Table 1's figures for the model (test_error %, params_m, memory, time), {} if it has none."""
    entry = MODELS.get(model)
    return dict(entry.paper) if entry is not None and entry.table == 1 else {}


def paper_rmse(model: str, n_obs: int) -> float:
    """Return Table 2's test RMSE for the model with n_obs observed points of 100, NaN if it has none."""
    entry = MODELS.get(model)
    return float(entry.paper.get(n_obs, math.nan)) if entry is not None and entry.table == 2 else math.nan
