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


# Table 2: predictive RMSE on the test set, by observed points per trajectory (of 100).
TABLE2 = {"rnn": {30: 0.3937, 50: 0.3202, 100: 0.1813}, "latent_ode": {30: 0.1642, 50: 0.1502, 100: 0.1346}}
SEQUENCE_ORDER = ("rnn", "latent_ode")
SEQUENCE_LABELS = {"rnn": "RNN", "latent_ode": "Latent ODE"}
SEQUENCE_COLORS = {"rnn": "#d62728", "latent_ode": "#2ca02c"}


def model_rank(model: str) -> int:
    """Return the model's position in the paper's row order (unknown models last)."""
    return MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER)
