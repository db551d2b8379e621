"""report.html: one self-contained page with the report's tables, figures and the runs not completed;
read as a browser reads it where Chromium is installed (Debian's `chromium`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from noderun.models import MODELS
from noderun.report.cli import build_report
from test_report_unit import sequence_run, train_run


class _Page(HTMLParser):
    """The parts of a page the tests look at: its text, its images' sources, any outside reference."""

    def __init__(self) -> None:
        super().__init__()
        self.text, self.images, self.outside, self.tables = [], [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tables += tag == "table"
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for name in ("src", "href"):
            if attrs.get(name) and not attrs[name].startswith("data:"):
                self.outside.append(attrs[name])

    def handle_data(self, data):
        self.text.append(data)


def read_page(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture
def report_dir(tmp_path) -> Path:
    """A report over two Table-1 ODE-Net seeds, an MLP run, a Table-2 run and a failed run whose model
    name holds markup and a terminal escape (a hostile summary)."""
    runs = tmp_path / "runs"
    train_run(runs, "0", "odenet", 0, 0.80)
    train_run(runs, "1", "odenet", 1, 1.20)
    train_run(runs, "2", "mlp", 0, 2.50)
    sequence_run(runs, "3", "latent_ode", 0, 30, 0.3)
    bad = train_run(runs, "4", "resnet", 0, 5.0)
    summary = json.loads((bad / "summary.json").read_text())
    summary.update(status="failed", reason="<script>alert(1)</script>\x1b[31m boom")
    (bad / "summary.json").write_text(json.dumps(summary))
    build_report([runs], tmp_path / "report")
    return tmp_path / "report"


def test_report_html_holds_every_table_and_figure_and_needs_no_network(report_dir):
    page = read_page(report_dir / "report.html")
    text = " ".join(page.text)
    pngs = sorted(report_dir.glob("*.png"))
    assert len(pngs) >= 3 and len(page.images) == len(pngs)
    assert all(src.startswith("data:image/png;base64,") and len(src) > 1000 for src in page.images)
    assert page.outside == []  # nothing fetched from anywhere: the page is whole
    assert page.tables == 2  # Table 1 and Table 2
    assert MODELS["odenet"].label in text and MODELS["latent_ode"].label in text and "paper" in text
    assert "failed" in text and "boom" in text  # the run that did not complete, with its reason
    raw = (report_dir / "report.html").read_text()
    assert "<script>" not in raw and "\x1b" not in raw  # a hostile reason is text, never markup


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_report_html_shows_its_tables_and_figures_in_a_browser(report_dir, tmp_path):
    browser = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}"]
    url = (report_dir / "report.html").resolve().as_uri()
    dom = subprocess.run([*browser, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    pngs = len(list(report_dir.glob("*.png")))
    assert len(re.findall(r"<img ", dom.stdout)) == pngs and dom.stdout.count("<table>") == 2
    assert MODELS["odenet"].label in dom.stdout and "Runs not completed" in dom.stdout
    shot = tmp_path / "shot.png"
    result = subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1400,4000", url],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and shot.stat().st_size > 20_000, result.stderr[-2000:]
    # The figures were drawn: a page of text alone has few colours, matplotlib's figures many.
    from PIL import Image

    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200
