"""The paper's own figures, to print beside ours (Chen et al. 2018; see shared REFERENCE.md)."""

MODEL_ORDER = ("mlp", "resnet", "rknet", "odenet")
MODEL_LABELS = {"mlp": "MLP", "resnet": "ResNet", "rknet": "RK-Net", "odenet": "ODE-Net"}
# One colour per model in every figure (matplotlib's tab10 entries).
MODEL_COLORS = {"mlp": "#7f7f7f", "resnet": "#1f77b4", "rknet": "#ff7f0e", "odenet": "#2ca02c"}
ODE_MODELS = ("rknet", "odenet")

# Table 1: test error (%), parameters (millions), memory and time complexity.
TABLE1 = {
    "mlp": {"test_error": 1.60, "params_m": 0.24, "memory": "-", "time": "-"},
    "resnet": {"test_error": 0.41, "params_m": 0.60, "memory": "O(L)", "time": "O(L)"},
    "rknet": {"test_error": 0.47, "params_m": 0.22, "memory": "O(L̃)", "time": "O(L̃)"},
    "odenet": {"test_error": 0.42, "params_m": 0.22, "memory": "O(1)", "time": "O(L̃)"},
}


def model_rank(model: str) -> int:
    """Return the model's position in the paper's row order (unknown models last)."""
    return MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER)
