"""`noderun --help`: noderun's own page in Hydra's help mechanism (hydra/help), listing every config
group with its options, every preset with a line saying what it does, every task, the report command
and resume. Compared with the config folders and the experiments registry, so it cannot go stale."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from conftest import NODERUN
from noderun.command import CONF_DIR
from noderun.experiments import EXPERIMENTS

HELP_FILE = CONF_DIR / "hydra" / "help" / "noderun.yaml"


def section(page: str, title: str) -> str:
    """Return the lines of the page's section `== title ==`, up to the next section."""
    match = re.search(rf"== {re.escape(title)} ==\n(.*?)(?:\n== |\Z)", page, re.S)
    assert match, f"no section {title!r}"
    return match.group(1)


def presets() -> set[str]:
    """Return the names of the preset YAMLs (experiment group); files starting with _ are parts, not presets."""
    return {p.stem for p in (CONF_DIR / "experiment").glob("*.yaml") if not p.stem.startswith("_")}


def test_the_help_page_lists_every_preset_with_a_line_and_every_task():
    template = yaml.safe_load(HELP_FILE.read_text())["template"]
    listed = {line.split()[0]: line for line in section(template, "Presets (experiment=NAME)").splitlines() if line.strip()}
    assert set(listed) == presets()
    assert all(len(line.split()) > 3 for line in listed.values())  # each has its description
    tasks = re.findall(r"[a-z_]+", " ".join(line.split("  ")[1] for line in
                                            section(template, "Tasks (what a run does; presets set them)").splitlines()
                                            if line.strip()))
    assert set(EXPERIMENTS) <= set(tasks)
    for needed in ("noderun-report", "resume=true", "resume=DIR", "experiment=quick", "$APP_CONFIG_GROUPS"):
        assert needed in template, needed


@pytest.mark.slow
def test_noderun_help_shows_every_group_with_its_options(tmp_path):
    result = subprocess.run([NODERUN, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    groups = section(result.stdout, "Configuration groups (group=option)")
    shown = dict(line.split(": ", 1) for line in groups.splitlines() if ": " in line)
    folders = {d.name for d in CONF_DIR.iterdir() if d.is_dir() and d.name != "hydra"}
    assert set(shown) == folders
    for group in folders:
        options = {p.stem for p in (CONF_DIR / group).glob("*.yaml") if not p.stem.startswith("_")}
        assert set(shown[group].split(", ")) == options, group
    assert "== Presets (experiment=NAME) ==" in result.stdout and "noderun-report" in result.stdout
    assert not list(tmp_path.iterdir())  # help runs nothing and writes nothing
