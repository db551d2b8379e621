"""Nothing lost, nothing hung (issue 30): run directories, report folders and sweeps that a repeated or
careless command cannot destroy, files that cannot hang a reader, and mistakes said in one line.

noderun writes only files it made, into directories it made or that hold nothing but its own files; a
directory that holds a run is continued only on resume. Each test uses real files, links, FIFOs, mounts
and processes: the unit ones run noderun in this process, the slow ones the installed commands."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import noderun
from conftest import NODERUN, SMALL, error_lines, run_noderun, single_error_line
from noderun.errors import UserError
from noderun.experiments import EXPERIMENTS
from noderun.run.lifecycle import EXIT_OK, EXIT_USER_ERROR, run_experiment
from noderun.records import load_checkpoint, read_summary, save_checkpoint
from noderun.report.cli import build_report, main as report_main
from test_report_unit import not_completed, train_run

CONF = str(Path(noderun.__file__).parent / "conf")
REPORT = str(Path(sys.executable).parent / "noderun-report")
TINY_RNN = ["experiment=timeseries", "model=rnn", "dataset.n_spirals=20", "trainer.batch_size=10", "trainer.epochs=2", "threads=1"]
# A few lines of YAML whose nested aliases stand for 10^9 nodes once expanded (the "billion laughs").
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))


def fingerprint(folder: Path) -> dict[str, str]:
    """Return every entry below folder (hidden ones too) with what it is: a file's SHA-256, a link's
    target, 'dir' for a folder."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            found[name] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[name] = "dir"
        else:
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _in_process(overrides: list[str], run_dir: Path, output_root: Path) -> int:
    """Compose the config as the CLI would and run it in this process in run_dir."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"paths.output_root={output_root}"])
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_experiment(cfg, run_dir, EXPERIMENTS, overrides=overrides, threads=1)


@pytest.fixture
def held_run(noderun_main, tmp_path) -> Path:
    """A completed two-epoch RNN run made by the noderun command in a fixed directory (hydra.run.dir)."""
    result = noderun_main([*TINY_RNN, "hydra.run.dir=held"])
    assert result.returncode == 0, result.stderr
    return tmp_path / "held"


def _stopped(run_dir: Path) -> Path:
    """Mark a run as a signal after its last record would leave it: interrupted, so resume continues it."""
    summary = read_summary(run_dir)
    summary.update(status="interrupted", reason="received signal 15")
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


# --- 1. the report writes only files it made ---------------------------------------------------------------

@pytest.mark.parametrize("where", ["--out", "default", "link"])
def test_the_report_never_deletes_or_overwrites_files_it_did_not_write(tmp_path, capsys, where):
    runs = tmp_path / "runs"
    train_run(runs, "0", "odenet", 0, 0.80)
    mine = tmp_path / "mydocs"
    mine.mkdir()
    (mine / "main.pdf").write_bytes(b"%PDF-1.5 the paper")
    (mine / "table1.md").write_text("my own table\n")
    args = {"--out": [str(runs), "--out", str(mine)], "default": [str(runs)], "link": [str(runs)]}[where]
    if where == "default":  # the default FIRST_PATH/report holding the user's files
        (runs / "report").mkdir()
        for path in mine.iterdir():
            (runs / "report" / path.name).write_bytes(path.read_bytes())
        mine = runs / "report"
    elif where == "link":
        (runs / "report").symlink_to(mine, target_is_directory=True)
    before = fingerprint(mine)
    with pytest.raises(SystemExit) as stop:
        report_main(args)
    lines = error_lines(capsys.readouterr())
    assert stop.value.code == 2 and len(lines) == 1, lines
    assert "did not write" in lines[0] and "--out DIR" in lines[0] and "main.pdf" in lines[0]
    assert fingerprint(mine) == before


def test_a_report_replaces_and_removes_only_its_own_files(tmp_path):
    runs = tmp_path / "runs"
    train_run(runs, "0", "odenet", 0, 0.80)
    train_run(runs, "1", "mlp", 0, 2.50)
    out = tmp_path / "report"
    build_report([runs], out)
    assert (out / "table1.md").exists() and (out / "accuracy.png").exists()
    (runs / "0" / "summary.json").unlink()  # a report over fewer runs: its own older files go or change
    (runs / "0" / "metrics.csv").unlink()
    build_report([runs], out)
    assert "odenet" not in (out / "table1.md").read_text().lower()
    (out / "table1.md").write_text("edited by hand\n")  # no longer what the report wrote: not replaced
    with pytest.raises(UserError, match="changed since"):
        build_report([runs], out)
    assert (out / "table1.md").read_text() == "edited by hand\n"


# --- 2. a run directory that holds a run is continued only on resume -----------------------------------------

def test_a_directory_holding_a_run_is_refused_without_resume_and_left_unchanged(held_run, noderun_main):
    before = fingerprint(held_run)
    for extra in ([], ["seed=1"], ["trainer.epochs=3"]):
        line = single_error_line(noderun_main([*TINY_RNN, *extra, "hydra.run.dir=held"]))
        assert str(held_run) in line and "resume=true" in line and "another directory" in line, line
        assert fingerprint(held_run) == before


def test_a_refused_config_leaves_a_run_it_is_pointed_at_unchanged(held_run, tmp_path, capsys):
    before = fingerprint(held_run)
    # Refused inside the run too (the command line's check comes first in the CLI), with and without resume.
    for extra in (["trainer.lr=-1"], ["trainer.lr=-1", "resume=true"]):
        assert _in_process([*TINY_RNN, *extra], held_run, tmp_path / "outputs") == EXIT_USER_ERROR
        assert len(error_lines(capsys.readouterr())) == 1
        assert fingerprint(held_run) == before
    assert read_summary(held_run)["status"] == "completed"


def test_resume_true_continues_the_run_in_its_own_directory_and_only_that_config(held_run, noderun_main):
    before = fingerprint(held_run)
    result = noderun_main([*TINY_RNN, "hydra.run.dir=held", "resume=true"])
    assert result.returncode == 0 and fingerprint(held_run) == before  # completed: nothing redone
    line = single_error_line(noderun_main([*TINY_RNN, "trainer.epochs=3", "hydra.run.dir=held", "resume=true"]))
    assert "trainer.epochs" in line and str(held_run) in line
    assert fingerprint(held_run) == before
    _stopped(held_run)
    rows = (held_run / "metrics.csv").read_text()
    result = noderun_main([*TINY_RNN, "hydra.run.dir=held", "resume=true"])
    assert result.returncode == 0, result.stderr
    assert read_summary(held_run)["status"] == "completed" and (held_run / "metrics.csv").read_text() == rows
    assert not (held_run / "run_link.json").exists()


def test_a_directory_holding_other_files_is_refused(noderun_main, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep\n")
    line = single_error_line(noderun_main([*TINY_RNN, "hydra.run.dir=mine"]))
    assert "notes.txt" in line and "did not write" in line
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_a_second_process_never_touches_a_running_run(tmp_path):
    first = subprocess.Popen([NODERUN, *TINY_RNN, "trainer.epochs=100000", "hydra.run.dir=D"], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "D"
    try:
        while not ((run / "summary.json").exists() and read_summary(run).get("epochs_done", 0) >= 1):
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.2)
        config = fingerprint(run / ".hydra")
        # Another config in the same directory, and the same one asking to resume it while it runs.
        for extra in (["seed=1"], ["resume=true"]):
            second = subprocess.run([NODERUN, *TINY_RNN, "trainer.epochs=100000", "hydra.run.dir=D", *extra],
                                    cwd=tmp_path, capture_output=True, text=True, timeout=300)
            assert second.returncode == 2 and len(error_lines(second)) == 1, second.stderr
            summary = read_summary(run)
            assert summary["status"] == "running" and summary["reason"] is None
            assert fingerprint(run / ".hydra") == config
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    assert read_summary(run)["status"] == "interrupted"
    # The run's log tells only its own story: no line of the refused processes.
    assert "being run by process" not in (run / "noderun.log").read_text()
    assert "already holds a run" not in (run / "noderun.log").read_text()


# --- 3. a sweep with a fixed directory --------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("table", ["table2", "table1"])
def test_a_sweep_in_a_fixed_directory_is_resumed_without_retraining_and_otherwise_refused(tmp_path, request, table):
    runs = TINY_RNN if table == "table2" else ["model=mlp", *SMALL, "threads=1"]
    data = request.getfixturevalue("mnist_root") if table == "table1" else tmp_path / "no-data"
    sweep = ["-m", *runs, "seed=0,1", "hydra.sweep.dir=S"]
    first = run_noderun(sweep, data, tmp_path)
    assert first.returncode == 0, first.stderr
    done = {n: fingerprint(tmp_path / "S" / n) for n in ("0", "1")}
    before = fingerprint(tmp_path / "S")
    line = single_error_line(run_noderun(sweep, data, tmp_path))
    assert "hydra.sweep.dir=S" in line and "resume=true" in line and "another directory" in line
    assert fingerprint(tmp_path / "S") == before
    again = run_noderun([*sweep, "resume=true"], data, tmp_path)
    assert again.returncode == 0, again.stderr
    assert {n: fingerprint(tmp_path / "S" / n) for n in ("0", "1")} == done  # no run retrained or rewritten
    assert "2 completed" in again.stdout


# --- 4. a crafted checkpoint's rows ------------------------------------------------------------------------

@pytest.mark.parametrize("rows, named", [
    (["not a row", 1], "row 1 is a str"),
    ("five", "5 rows for a run of 2 epochs"),
    ([{"epoch": 2}], "numbered epoch 2"),
])
def test_a_checkpoint_whose_rows_disagree_with_the_run_is_refused(held_run, tmp_path, capsys, rows, named):
    _stopped(held_run)
    state = load_checkpoint(held_run / "last.pt")
    state["rows"] = [*state["rows"], *state["rows"], state["rows"][0]] if rows == "five" else rows
    if rows == "five":
        state["rows"] = [{**row, "epoch": i + 1} for i, row in enumerate(state["rows"])]
    save_checkpoint(held_run / "last.pt", state)
    before = fingerprint(held_run)
    assert _in_process([*TINY_RNN, f"resume={held_run}"], tmp_path / "second", tmp_path / "outputs") == EXIT_USER_ERROR
    lines = error_lines(capsys.readouterr())
    assert len(lines) == 1 and named in lines[0] and "last.pt" in lines[0], lines
    assert fingerprint(held_run) == before


# --- 5. the log is never written through a link ----------------------------------------------------------

@pytest.mark.parametrize("how", ["resume=DIR", "in its own directory"])
def test_a_log_that_is_a_link_is_never_written_through(held_run, tmp_path, noderun_main, how):
    _stopped(held_run)
    outside = tmp_path / "outside.txt"
    outside.write_text("not noderun's\n")
    (held_run / "noderun.log").unlink()
    (held_run / "noderun.log").symlink_to(outside)
    before = fingerprint(held_run)
    extra = [f"resume={held_run}"] if how == "resume=DIR" else ["hydra.run.dir=held", "resume=true"]
    line = single_error_line(noderun_main([*TINY_RNN, *extra]))
    assert "noderun.log" in line and "symbolic link" in line
    assert outside.read_text() == "not noderun's\n" and fingerprint(held_run) == before


# --- 6. only regular files are read ------------------------------------------------------------------------

@pytest.mark.slow
def test_a_checkpoint_that_is_a_fifo_is_refused_without_hanging(tmp_path):
    made = subprocess.run([NODERUN, *TINY_RNN, "hydra.run.dir=D"], cwd=tmp_path, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    _stopped(tmp_path / "D")
    (tmp_path / "D" / "last.pt").unlink()
    os.mkfifo(tmp_path / "D" / "last.pt")
    result = subprocess.run([NODERUN, *TINY_RNN, f"resume={tmp_path / 'D'}"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    line = single_error_line(result)
    assert "last.pt is a FIFO" in line
    assert not (tmp_path / "D" / ".noderun.lock").exists()


def _image_cache(root: Path, first: str) -> Path:
    """An MNIST cache whose first file (the training images) is `first`: 'zero' (a link to the endless
    /dev/zero) or 'folder'; the other three are empty files."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"")
    images = raw / "train-images-idx3-ubyte"
    images.symlink_to("/dev/zero") if first == "zero" else images.mkdir()
    return root


@pytest.mark.slow
def test_a_data_file_linked_to_an_endless_device_is_refused_without_hanging(tmp_path):
    root = _image_cache(tmp_path / "data", "zero")
    result = subprocess.run([NODERUN, "model=mlp", "dataset.sources=[cache]", f"dataset.root={root}",
                             "trainer.epochs=1"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    line = single_error_line(result)
    assert "train-images-idx3-ubyte is a character device, not a regular file" in line


# --- 7. one safe loader for YAML and JSON from a run directory ------------------------------------------

def test_the_yaml_loader_refuses_aliases_and_reads_a_config():
    from noderun.safeio import UnsafeFile, parse_yaml  # here: the one loader this test is about

    with pytest.raises(UnsafeFile, match="aliases"):
        parse_yaml(ALIAS_BOMB, "config.yaml")
    assert parse_yaml("a: 1.0e-06\nb: ${a}\n", "config.yaml") == {"a": 1e-06, "b": "${a}"}


def _limited_memory() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30))


@pytest.mark.slow
def test_the_tolerance_task_refuses_a_config_of_nested_aliases(tmp_path):
    run = tmp_path / "trained"
    (run / ".hydra").mkdir(parents=True)
    save_checkpoint(run / "best.pt", {"model": {"w": torch.zeros(1)}})
    (run / ".hydra" / "config.yaml").write_text(ALIAS_BOMB)
    result = subprocess.run([NODERUN, "experiment=tolerance", f"ckpt={run}"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, preexec_fn=_limited_memory)
    line = single_error_line(result)
    assert "config.yaml uses YAML aliases" in line


# --- 8. what the report passes over is listed ---------------------------------------------------------------

def _too_deep(root: Path) -> Path:
    """Make a folder below root whose path is longer than the system allows (PATH_MAX), holding a
    summary.json, through directory descriptors; return the first folder of the chain."""
    name = "d" * 250
    fd = os.open(root, os.O_DIRECTORY)
    try:
        for _ in range(os.pathconf(root, "PC_PATH_MAX") // len(name) + 2):
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        written = os.open("summary.json", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
        os.write(written, b"{}")
        os.close(written)
    finally:
        os.close(fd)
    return root / name


def test_a_folder_the_report_cannot_list_is_reported_and_resume_goes_on(tmp_path, capsys):
    runs = tmp_path / "outputs"
    train_run(runs, "0", "odenet", 0, 0.80)
    _too_deep(runs)
    text, run_set = build_report([runs], tmp_path / "report")
    assert "1 unreadable" in text
    assert any("cannot be listed" in line and "too long" in line for line in not_completed(tmp_path / "report"))
    # resume=true searches the same output root: a path it cannot list is passed over.
    assert _in_process([*TINY_RNN, "resume=true"], runs / "runs" / "new", runs) == EXIT_OK
    assert read_summary(runs / "runs" / "new")["status"] == "completed"


# --- 9. text from a summary is escaped in every output -----------------------------------------------------

def test_text_from_a_summary_reaches_no_output_raw(tmp_path, capsys):
    runs = tmp_path / "runs"
    run = train_run(runs, "0", "odenet", 0, 0.80)
    train_run(runs, "1", "odenet", 1, 0.90)
    summary = json.loads((run / "summary.json").read_text())
    summary.update(solver="dopri5\x1b[2J|evil\nrow", torch_version="2.4\x1b]0;title\x07")
    (run / "summary.json").write_text(json.dumps(summary))
    config = (run / ".hydra" / "config.yaml").read_text()  # a setting that tells rows apart: a table cell
    (run / ".hydra" / "config.yaml").write_text(config.replace("crop_padding: 4", 'crop_padding: "4|x\\e[31m"'))
    out = tmp_path / "report"
    report_main([str(runs), "--out", str(out)])
    printed = capsys.readouterr().out
    for text in (printed, (out / "table1.md").read_text(), (out / "runs.csv").read_text()):
        assert "\x1b" not in text and "\x07" not in text and "evil\nrow" not in text
    assert all(line.count("|") - line.count("\\|") == line.count(" | ") + 2
               for line in (out / "table1.md").read_text().splitlines() if line.startswith("| "))
    with open(out / "runs.csv", newline="") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    assert "dopri5 [2J|evil row" in cells


# --- 10. one line, exit 2 ----------------------------------------------------------------------------

@pytest.mark.parametrize("override, named", [
    (f"seed={2**70}", "seed="), ("trainer.momentum=-0.5", "trainer.momentum=-0.5"),
    ("trainer.weight_decay=-0.0001", "trainer.weight_decay"), ("trainer.lr=inf", "trainer.lr=inf"),
    ("trainer.lr=nan", "trainer.lr=nan"), ("trainer.lr_decay_factor=-1", "trainer.lr_decay_factor"),
])
def test_numbers_no_run_can_take_are_refused_in_one_line(noderun_main, override, named):
    assert named in single_error_line(noderun_main(["model=mlp", override]))


def test_a_data_file_that_is_a_folder_is_refused_in_one_line(noderun_main, tmp_path):
    root = _image_cache(tmp_path / "data", "folder")
    line = single_error_line(noderun_main(["model=mlp", "dataset.sources=[cache]", f"dataset.root={root}"]))
    assert "train-images-idx3-ubyte is a directory, not a regular file" in line


def test_a_lock_file_that_is_a_folder_is_refused_in_one_line(held_run, noderun_main):
    _stopped(held_run)
    (held_run / ".noderun.lock").mkdir()
    before = fingerprint(held_run)
    line = single_error_line(noderun_main([*TINY_RNN, "hydra.run.dir=held", "resume=true"]))
    assert ".noderun.lock is not a lock file noderun made" in line
    assert fingerprint(held_run) == before


def _mounted(folder: Path, options: str) -> bool:
    """Mount a tmpfs with `options` on folder; False where this machine does not allow it (not root)."""
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


@pytest.mark.slow
def test_a_read_only_run_directory_is_refused_in_one_line_on_resume(held_run, noderun_main, tmp_path):
    mount = tmp_path / "ro"
    if not _mounted(mount, "size=4m"):
        pytest.skip("a read-only folder needs a mount (root): permissions do not stop root")
    try:
        subprocess.run(["cp", "-a", str(_stopped(held_run)), str(mount / "run")], check=True)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        line = single_error_line(noderun_main([*TINY_RNN, f"resume={mount / 'run'}"]))
        assert "Read-only file system" in line and "run" in line
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _file_size_limit(limit: int):
    """Return a preexec_fn that caps the size of any file the process writes (RLIMIT_FSIZE)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow
@pytest.mark.parametrize("when", ["at the start", "mid-run"])
def test_a_full_disk_is_said_in_one_line(tmp_path, when):
    """A small tmpfs where this machine allows mounting one (root), else a file-size limit (ulimit -f)."""
    disk = tmp_path / "disk"
    # At the start: nothing free. Mid-run: room for the first records, not for the predictions and figures.
    size = "64k" if when == "at the start" else "272k"
    mounted = _mounted(disk, f"size={size}")
    limit = None if mounted else (2048 if when == "at the start" else 64 << 10)
    try:
        if mounted and when == "at the start":
            (disk / "fill").write_bytes(b"\0" * (60 << 10))
        result = subprocess.run([NODERUN, *TINY_RNN, f"paths.output_root={disk / 'out'}",
                                 f"hydra.run.dir={disk / 'out' / 'run'}"], cwd=tmp_path, capture_output=True,
                                text=True, timeout=300, preexec_fn=_file_size_limit(limit) if limit else None)
        lines = error_lines(result)
        if when == "at the start":
            assert result.returncode == 2 and len(lines) == 1 and "the disk is full" in lines[0], result.stderr
        else:
            assert result.returncode == 1 and len(lines) == 1 and "the disk is full" in lines[0], result.stderr
            summary = read_summary(disk / "out" / "run")
            assert summary["status"] == "failed" and "the disk is full" in summary["reason"]
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.slow
def test_the_report_into_a_closed_pipe_ends_quietly(tmp_path):
    runs = tmp_path / "runs"
    train_run(runs, "0", "odenet", 0, 0.80)
    reader, writer = os.pipe()
    os.close(reader)  # as `| head -1` does once it has its line: every write into the pipe fails
    try:
        result = subprocess.run([REPORT, str(runs)], stdout=writer, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(writer)
    assert result.stderr == "" and result.returncode == 0
