"""Drawing only: figures from tables already in memory, each written as PNG and PDF.

The experiments call in here to draw their own figures, and so does the report (noderun.report),
which reads run directories; this package reads no run directory and imports neither of them.
Importing it selects matplotlib's file-only backend, so no display is ever needed.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported anywhere: files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from noderun.records import write_bytes_atomically  # noqa: E402


def save_figure(fig, out_dir: Path, name: str) -> list[Path]:
    """Write the figure as out_dir/name.png and .pdf, each whole or not at all (a failed write, such as
    on a full disk, leaves no partial file), close it, and return the two paths."""
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    fig.tight_layout()
    try:
        for path in paths:
            drawn = io.BytesIO()
            fig.savefig(drawn, format=path.suffix[1:], dpi=150)
            write_bytes_atomically(path, drawn.getvalue())
    finally:
        plt.close(fig)
    return paths
