"""The one run lifecycle (noderun.run.lifecycle) and the run directory's contract (noderun.records): safe
checkpoints, resume that checks what it resumes, records that signals and broken files cannot damage,
one process per run directory. Unit tests run tiny real experiments in-process (Table 2's RNN on 20
spirals: no MNIST); the slow ones drive the real `noderun` command and kill it."""

from __future__ import annotations

import csv
import io
import json
import os
import pickletools
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import noderun
from conftest import NODERUN, error_lines, run_noderun
from noderun.experiments import EXPERIMENTS
from noderun.run.lifecycle import EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR, run_experiment
from noderun.run.lock import RunLock
from noderun.run.resume import capabilities
from noderun.run.signals import Interrupted, signals_deferred
from noderun.models import build_model
from noderun.models.trained import model_at, trained_run
from noderun.records import TIMING_COLUMNS, BrokenRecord, load_checkpoint, read_summary, save_checkpoint
from noderun.run.identity import run_key
from noderun.solvers import SolverSpec
from noderun.errors import UserError

CONF = str(Path(noderun.__file__).parent / "conf")
TINY_RNN = ["experiment=timeseries", "model=rnn", "dataset.n_spirals=20", "trainer.batch_size=10", "trainer.epochs=2", "threads=1"]


class _CreatesFile:
    """Unpickling this calls Path.touch on its path: a stand-in for a checkpoint that runs code."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _plant(path: Path, marker: Path) -> None:
    """Write a real torch checkpoint whose unpickling (a load that admits objects) would create `marker`."""
    torch.save({"model": _CreatesFile(marker), "rows": []}, path)


def _run(overrides: list[str], output_root: Path, name: str = "run") -> tuple[int, Path]:
    """Compose the config as the CLI would and run it in-process into output_root/runs/name."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"paths.output_root={output_root}"])
    run_dir = output_root / "runs" / name
    run_dir.mkdir(parents=True)
    return run_experiment(cfg, run_dir, EXPERIMENTS, overrides=overrides, threads=1), run_dir


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as handle:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(handle)]


@pytest.fixture
def finished_rnn(tmp_path) -> Path:
    """A completed two-epoch run of Table 2's RNN."""
    code, run_dir = _run(TINY_RNN, tmp_path / "out", "first")
    assert code == EXIT_OK
    return run_dir


@pytest.fixture
def stopped_rnn(finished_rnn) -> Path:
    """The same run as a signal after its last epoch's record leaves it: not yet completed."""
    summary = read_summary(finished_rnn)
    summary.update(status="interrupted", reason="received signal 15")
    (finished_rnn / "summary.json").write_text(json.dumps(summary))
    return finished_rnn


# --- hostile and broken checkpoints -------------------------------------------------------------

def test_a_planted_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    _plant(tmp_path / "last.pt", marker)
    with pytest.raises(BrokenRecord, match="last.pt"):
        load_checkpoint(tmp_path / "last.pt")
    assert not marker.exists()
    # The file really is hostile: its pickle calls Path.touch on the marker when unpickled (read with
    # pickletools, which executes nothing).
    calls = _pickle_calls(tmp_path / "last.pt")
    assert "'pathlib Path'" in calls and "'touch'" in calls and f"'{marker.name}'" in calls and "REDUCE" in calls


def _pickle_calls(path: Path) -> str:
    """Return the disassembly of a torch checkpoint's pickle (its data.pkl), without executing it."""
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        out = io.StringIO()
        pickletools.dis(archive.read(name), out=out)
    return out.getvalue()


def test_resume_refuses_a_planted_checkpoint_and_leaves_the_record(stopped_rnn, tmp_path, capsys):
    finished_rnn = stopped_rnn
    marker = tmp_path / "pwned"
    _plant(finished_rnn / "last.pt", marker)
    before = (finished_rnn / "summary.json").read_text()
    code, _ = _run([*TINY_RNN, f"resume={finished_rnn}"], tmp_path / "out", "second")
    assert code == EXIT_USER_ERROR and not marker.exists()
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and "last.pt" in lines[0], lines
    assert (finished_rnn / "summary.json").read_text() == before


def test_the_tolerance_task_and_bench_refuse_a_planted_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("model:\n  name: odenet\n")
    _plant(run_dir / "best.pt", marker)
    with pytest.raises(UserError, match="best.pt"):
        trained_run(run_dir)  # what experiment=tolerance ckpt=... and scripts/bench.py --checkpoint call
    assert not marker.exists()


def test_a_truncated_checkpoint_is_refused_in_one_line_and_the_record_kept(stopped_rnn, tmp_path, capsys):
    finished_rnn = stopped_rnn
    last = finished_rnn / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    before = {name: (finished_rnn / name).read_bytes() for name in ("summary.json", "metrics.csv")}
    code, _ = _run([*TINY_RNN, f"resume={finished_rnn}"], tmp_path / "out", "second")
    assert code == EXIT_USER_ERROR
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and str(last) in lines[0], lines
    assert {name: (finished_rnn / name).read_bytes() for name in before} == before


# --- resume checks what it resumes --------------------------------------------------------------

@pytest.mark.parametrize("change, key", [("seed=5", "seed"), ("trainer.lr=0.0001", "trainer.lr"),
                                         ("model=latent_ode", "model.name")])
def test_resume_by_directory_refuses_another_config(finished_rnn, tmp_path, capsys, change, key):
    before = (finished_rnn / "summary.json").read_text()
    overrides = [o for o in TINY_RNN if not o.startswith(change.split("=")[0] + "=")] + [change]
    code, _ = _run([*overrides, f"resume={finished_rnn}"], tmp_path / "out", "second")
    assert code == EXIT_USER_ERROR
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and key in lines[0] and "refused" in lines[0], lines
    assert (finished_rnn / "summary.json").read_text() == before


@pytest.mark.parametrize("epochs", [3, 1])
def test_resume_by_directory_refuses_other_epochs(stopped_rnn, tmp_path, capsys, epochs):
    """The lr's decay points are fractions of the run: more or fewer epochs is another computation."""
    before = (stopped_rnn / "summary.json").read_text()
    code, _ = _run([*TINY_RNN, f"trainer.epochs={epochs}", f"resume={stopped_rnn}"], tmp_path / "out", "second")
    assert code == EXIT_USER_ERROR
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and "trainer.epochs" in lines[0], lines
    assert (stopped_rnn / "summary.json").read_text() == before


def test_a_checkpoint_that_does_not_fit_is_refused_and_the_record_kept(stopped_rnn, tmp_path, capsys):
    """A best.pt copied over last.pt (no optimizer), or a state with the run's key config but no weights."""
    state = load_checkpoint(stopped_rnn / "last.pt")
    torch.save({**state, "optimizer": None}, stopped_rnn / "last.pt")
    before = {name: (stopped_rnn / name).read_bytes() for name in ("summary.json", "metrics.csv")}
    code, _ = _run([*TINY_RNN, f"resume={stopped_rnn}"], tmp_path / "out", "second")
    assert code == EXIT_USER_ERROR
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and "last.pt does not fit" in lines[0], lines
    assert {name: (stopped_rnn / name).read_bytes() for name in before} == before


@pytest.mark.parametrize("field, value", [("epochs_done", "x"), ("resumed", 5), ("key_config", "abc")])
def test_a_summary_with_wrong_types_is_refused_in_one_line(stopped_rnn, tmp_path, capsys, field, value):
    summary = read_summary(stopped_rnn)
    summary[field] = value
    (stopped_rnn / "summary.json").write_text(json.dumps(summary))
    code, _ = _run([*TINY_RNN, f"resume={stopped_rnn}"], tmp_path / "out", "second")
    assert code == EXIT_USER_ERROR
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and "summary.json" in lines[0] and field in lines[0], lines


def test_resume_true_of_a_completed_run_trains_nothing(finished_rnn, tmp_path):
    before = (finished_rnn / "metrics.csv").read_text()
    code, new_dir = _run([*TINY_RNN, "resume=true"], tmp_path / "out", "second")
    assert code == EXIT_OK
    assert json.loads((new_dir / "run_link.json").read_text())["run_dir"] == str(finished_rnn.resolve())
    assert (finished_rnn / "metrics.csv").read_text() == before


def _as_before_rk_stages_retired(run_dir: Path) -> None:
    """Rewrite a run's records as noderun wrote them before issue 19 retired speed.rk_stages and gave
    solver.path: that key in its key config, summary and checkpoint (and its run key hashed with it),
    and no solver.path (those runs solved with torchdiffeq)."""
    summary = read_summary(run_dir)
    old = {**summary["key_config"], "speed": {"rk_stages": True}}
    old["solver"] = {k: v for k, v in old["solver"].items() if k != "path"}
    summary.update(key_config=old, run_key=run_key(old), status="interrupted", reason="received signal 15")
    (run_dir / "summary.json").write_text(json.dumps(summary))
    state = load_checkpoint(run_dir / "last.pt")
    save_checkpoint(run_dir / "last.pt", {**state, "key_config": old})


@pytest.mark.parametrize("how", ["resume=true", "resume=DIR"])
def test_a_run_from_before_speed_rk_stages_was_retired_resumes(finished_rnn, tmp_path, capsys, how):
    """Its key config still says speed.rk_stages and lacks solver.path: read as today's config would write
    it (without the retired key; solver.path=torchdiffeq, what it ran), it is found and continued."""
    _as_before_rk_stages_retired(finished_rnn)
    # Today's default path is another computation for an ODE model: resume=DIR names that key, and only it.
    code, _ = _run([*TINY_RNN, f"resume={finished_rnn}"], tmp_path / "out", "refused")
    lines = _lines(capsys.readouterr().err)
    assert code == EXIT_USER_ERROR and len(lines) == 1 and "(solver.path)" in lines[0], lines
    resume = "resume=true" if how == "resume=true" else f"resume={finished_rnn}"
    code, new_dir = _run([*TINY_RNN, "solver.path=torchdiffeq", resume], tmp_path / "out", "second")
    assert code == EXIT_OK
    assert json.loads((new_dir / "run_link.json").read_text())["run_dir"] == str(finished_rnn.resolve())
    assert read_summary(finished_rnn)["status"] == "completed" and len(read_summary(finished_rnn)["resumed"]) == 1


def test_a_table2_run_from_before_validation_spirals_resumes_with_none(finished_rnn, tmp_path, capsys):
    """A spirals run from before dataset.val_size had no validation split: read as today's config would
    write it (val_size 0), it is found and continued; today's default (100) is another computation."""
    summary = read_summary(finished_rnn)
    old = json.loads(json.dumps(summary["key_config"]))
    del old["dataset"]["val_size"]
    summary.update(key_config=old, run_key=run_key(old), status="interrupted", reason="received signal 15")
    (finished_rnn / "summary.json").write_text(json.dumps(summary))
    save_checkpoint(finished_rnn / "last.pt", {**load_checkpoint(finished_rnn / "last.pt"), "key_config": old})
    code, _ = _run([*TINY_RNN, f"resume={finished_rnn}"], tmp_path / "out", "refused")
    lines = _lines(capsys.readouterr().err)
    assert code == EXIT_USER_ERROR and len(lines) == 1 and "(dataset.val_size)" in lines[0], lines
    code, new_dir = _run([*TINY_RNN, "dataset.val_size=0", "resume=true"], tmp_path / "out", "second")
    assert code == EXIT_OK
    assert json.loads((new_dir / "run_link.json").read_text())["run_dir"] == str(finished_rnn.resolve())


def test_a_table2_run_reports_and_draws_the_epoch_chosen_on_its_validation_spirals(tmp_path):
    """At lr 0.05 the tiny RNN's validation RMSE is least after its second epoch of four: the summary's
    test RMSE is that epoch's, and the predictions written at the end come from its weights (best.pt)."""
    code, run_dir = _run([*TINY_RNN, "trainer.epochs=4", "trainer.lr=0.05"], tmp_path / "out")
    assert code == EXIT_OK
    summary, rows = read_summary(run_dir), _rows(run_dir)
    val = [float(r["val_rmse"]) for r in rows]
    assert summary["selected_by"] == "val_rmse" and summary["best_epoch"] == val.index(min(val)) + 1 == 2
    assert summary["test_rmse"] == pytest.approx(float(rows[1]["test_rmse"]))
    assert summary["final_test_rmse"] == pytest.approx(float(rows[-1]["test_rmse"])) != summary["test_rmse"]
    with open(run_dir / "spiral_predictions.csv") as handle:
        beyond = [r for r in csv.DictReader(handle) if r["in_window"] == "False"]
    squares = [(float(r[f"pred_{c}"]) - float(r[f"true_{c}"])) ** 2 for r in beyond for c in "xy"]
    assert len(beyond) == 4 * 100  # every test spiral of the 20 (test_fraction 0.2)
    assert (sum(squares) / len(squares)) ** 0.5 == pytest.approx(summary["test_rmse"], rel=1e-4)


@pytest.mark.parametrize("plant, named", [(lambda state: {**state, "model": {"cell.weight_ih": torch.zeros(1)}},
                                            "best.pt does not fit"),
                                           (None, "best.pt is truncated")])
def test_a_broken_best_checkpoint_is_refused_in_one_line_when_resuming(tmp_path, capsys, plant, named):
    """A run stopped after its last epoch, whose reported epoch (2 of 4) is not its last, draws its
    figures from best.pt on resume: a planted or truncated one is named in one line, and nothing is drawn."""
    code, run_dir = _run([*TINY_RNN, "trainer.epochs=4", "trainer.lr=0.05"], tmp_path / "out")
    assert code == EXIT_OK and read_summary(run_dir)["best_epoch"] == 2
    summary = read_summary(run_dir)
    summary.update(status="interrupted", reason="received signal 15")
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "spiral_predictions.csv").unlink()
    best = run_dir / "best.pt"
    if plant is None:
        best.write_bytes(best.read_bytes()[:100])
    else:
        save_checkpoint(best, plant(load_checkpoint(best)))
    code, _ = _run([*TINY_RNN, "trainer.epochs=4", "trainer.lr=0.05", f"resume={run_dir}"], tmp_path / "out", "second")
    lines = _lines(capsys.readouterr().err)
    assert code == EXIT_USER_ERROR and len(lines) == 1 and named in lines[0], lines
    assert not (run_dir / "spiral_predictions.csv").exists()


def test_a_trained_run_from_before_speed_rk_stages_was_retired_is_read(tmp_path):
    """The tolerance task and scripts/bench.py --checkpoint rebuild a trained ODE-Net from its run's
    config.yaml, which an older run wrote with speed.rk_stages and without solver.path."""
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(
        "task: train\nmodel:\n  name: odenet\n  downsampling: conv\n  t1: 1.0\n  adjoint: true\n"
        "solver:\n  method: dopri5\n  rtol: 0.001\n  atol: 0.001\nspeed:\n  rk_stages: true\n")
    torch.manual_seed(0)
    weights = build_model({"name": "odenet", "downsampling": "conv"}, SolverSpec()).state_dict()
    save_checkpoint(run_dir / "best.pt", {"model": weights, "rows": []})
    run_cfg, loaded, path = trained_run(run_dir)
    model = model_at(run_cfg, loaded, SolverSpec("dopri5", 1e-3, 1e-3), torch.device("cpu"), path)
    assert path.name == "best.pt" and run_cfg.speed.rk_stages is True
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


# --- signals and locks ------------------------------------------------------------------------

def test_a_signal_inside_a_write_is_delivered_after_it():
    previous = signal.signal(signal.SIGTERM, __import__("noderun.run.signals", fromlist=["_on_signal"])._on_signal)
    try:
        done = []
        with pytest.raises(Interrupted):
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler has run by now, inside the block: it must not raise here
                done.append(True)
        assert done == [True]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_run_directory_is_locked_while_it_runs_and_a_stale_lock_is_taken_over(tmp_path):
    first, second = RunLock(tmp_path), RunLock(tmp_path)
    first.acquire()
    with pytest.raises(UserError, match=str(os.getpid())):
        second.acquire()
    first.release()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".noderun.lock").write_text(f"{os.uname().nodename} {dead.pid}\n")
    second.acquire()  # its holder is gone
    second.release()
    assert not (tmp_path / ".noderun.lock").exists()


def test_two_processes_taking_over_one_stale_lock_never_both_hold_it(tmp_path):
    """The race: both find the same dead holder's lock; the first takes it over and holds the run; the
    second, going on from the stale text it read, must not delete the first's lock."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = f"{os.uname().nodename} {dead.pid}\n"
    lock = tmp_path / ".noderun.lock"
    lock.write_text(stale)
    first, second = RunLock(tmp_path), RunLock(tmp_path)
    first.acquire()  # took the stale lock over
    second.remove_if_still(stale)  # what the second does next on the stale text it read before
    assert lock.read_text() == first.mine  # the first's lock is back in place
    assert sorted(p.name for p in tmp_path.iterdir()) == [".noderun.lock"]  # nothing left aside
    second.remove_if_still(first.mine)  # a lock that is still what was judged stale is deleted
    assert not lock.exists()


def test_save_checkpoint_leaves_no_temporary_file_when_interrupted(tmp_path):
    class Exploding:
        def __reduce__(self):
            raise Interrupted("signal during the write")

    save_checkpoint(tmp_path / "last.pt", {"epoch": 1})
    with pytest.raises(Interrupted):
        save_checkpoint(tmp_path / "last.pt", {"epoch": 2, "bad": Exploding()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


# --- the real command: kills, races ---------------------------------------------------------------

def _start(args: list[str], data_root: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "NODERUN_DATA_DIR": str(data_root), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([NODERUN, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_rows(pattern: str, cwd: Path, count: int, process: subprocess.Popen, timeout: float = 300) -> Path:
    """Wait until a run directory matching cwd/pattern has `count` rows in metrics.csv; return it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for metrics in cwd.glob(f"{pattern}/metrics.csv"):
            try:
                if len(metrics.read_text().splitlines()) - 1 >= count:
                    return metrics.parent
            except OSError:
                pass
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    raise AssertionError("the run did not reach the epoch in time")


RESUMABLE = ["model=resnet", "dataset.train_size=384", "dataset.val_size=64", "dataset.test_size=64",
             "trainer.batch_size=32", "trainer.epochs=3", "trainer.eval_batch_size=64", "threads=1"]


@pytest.mark.slow
def test_table1_run_killed_mid_epoch_resumes_to_the_same_metrics(mnist_root, tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir(), killed.mkdir()
    assert run_noderun(RESUMABLE, mnist_root, reference).returncode == 0
    expected = _rows(next((reference / "outputs" / "runs").iterdir()))

    process = _start(RESUMABLE, mnist_root, killed)
    run_dir = _wait_for_rows("outputs/runs/*", killed, 1, process)
    time.sleep(0.3)  # into the second epoch
    process.kill()
    process.wait()
    assert len(_rows(run_dir)) < 3, "the run finished before it could be killed"
    assert read_summary(run_dir)["status"] == "running"

    result = run_noderun([*RESUMABLE, "resume=true"], mnist_root, killed)
    assert result.returncode == 0, result.stderr
    assert _rows(run_dir) == expected
    assert read_summary(run_dir)["status"] == "completed"


TABLE2_SWEEP = ["-m", "experiment=timeseries", "model=rnn,latent_ode", "dataset.n_spirals=40", "trainer.batch_size=10", "trainer.epochs=4",
                "threads=1"]


@pytest.mark.slow
def test_table2_sweep_killed_resumes_skipping_completed_runs(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir(), killed.mkdir()
    assert run_noderun(TABLE2_SWEEP, tmp_path, reference).returncode == 0
    expected = {read_summary(d)["model"]: _rows(d) for d in (reference / "outputs" / "multirun").glob("*/[0-9]")}

    process = _start(TABLE2_SWEEP, tmp_path, killed)
    second = _wait_for_rows("outputs/multirun/*/1", killed, 2, process)  # the latent ODE, two epochs in
    process.kill()
    process.wait()
    first = second.parent / "0"
    assert read_summary(first)["status"] == "completed" and read_summary(second)["status"] == "running"
    rows_at_kill = len(_rows(second))
    assert rows_at_kill < 4, "the run finished before it could be killed"
    first_metrics = (first / "metrics.csv").read_text()

    result = run_noderun([*TABLE2_SWEEP, "resume=true"], tmp_path, killed)
    assert result.returncode == 0, result.stderr
    assert (first / "metrics.csv").read_text() == first_metrics  # skipped, not retrained
    assert any("nothing to do" in p.read_text() for p in (killed / "outputs").glob("multirun/*/0/noderun.log"))
    assert f"from epoch {rows_at_kill}" in (second / "noderun.log").read_text()
    assert _rows(second) == expected["latent_ode"] and _rows(first) == expected["rnn"]
    assert read_summary(second)["status"] == "completed"


@pytest.mark.slow
def test_sigterm_at_any_moment_leaves_an_interrupted_run_with_intact_records(tmp_path):
    """Many SIGTERMs at random moments of a run that checkpoints every few milliseconds. The runs go two
    at a time (one torch thread each, two cores): starting Python and torch is most of each one's time."""
    args = ["experiment=timeseries", "model=rnn", "dataset.n_spirals=20", "trainer.batch_size=20", "trainer.epochs=400", "threads=1",
            "model.plot_spirals=1"]
    rng = random.Random(0)
    for pair in range(4):
        started = []
        for attempt in (2 * pair, 2 * pair + 1):
            cwd = tmp_path / str(attempt)
            cwd.mkdir()
            started.append((cwd, _start(args, tmp_path, cwd)))
        try:
            for cwd, process in started:
                run_dir = _wait_for_rows("outputs/runs/*", cwd, 1, process)
                time.sleep(rng.uniform(0, 0.3))
                process.send_signal(signal.SIGTERM)
                out, err = process.communicate(timeout=60)
                assert process.returncode == EXIT_INTERRUPTED, err
                assert "terminate called" not in err and len(_lines(err)) == 1, err
                summary = read_summary(run_dir)
                assert summary["status"] == "interrupted" and "signal" in summary["reason"]
                state = load_checkpoint(run_dir / "last.pt")
                assert len(state["rows"]) == len(_rows(run_dir)) == summary["epochs_done"]
                assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp") or p.name == ".noderun.lock"]
        finally:  # a failed check leaves no process of the pair running
            for _, process in started:
                if process.poll() is None:
                    process.kill()
                    process.communicate()


@pytest.mark.slow
def test_a_second_process_on_the_same_run_is_refused(tmp_path):
    args = ["experiment=timeseries", "model=rnn", "dataset.n_spirals=20", "trainer.batch_size=20", "trainer.epochs=400", "threads=1"]
    process = _start(args, tmp_path, tmp_path)
    run_dir = _wait_for_rows("outputs/runs/*", tmp_path, 1, process)
    try:
        second = run_noderun([*args, "resume=true"], tmp_path, tmp_path)
        assert second.returncode == EXIT_USER_ERROR
        lines = error_lines(second)
        assert len(lines) == 1 and str(process.pid) in lines[0] and str(run_dir.resolve()) in lines[0], second.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert read_summary(run_dir)["status"] == "interrupted"


def test_a_run_killed_after_its_last_record_resumes_to_completed_with_its_numbers(finished_rnn, tmp_path):
    summary = read_summary(finished_rnn)
    summary.update(status="running", finished=None)  # as a SIGKILL after the last epoch's record leaves it
    (finished_rnn / "summary.json").write_text(json.dumps(summary))
    code, _ = _run([*TINY_RNN, "resume=true"], tmp_path / "out", "second")
    assert code == EXIT_OK
    resumed = read_summary(finished_rnn)
    assert resumed["status"] == "completed" and resumed["epochs_done"] == 2
    assert resumed["test_rmse"] == summary["test_rmse"] and len(_rows(finished_rnn)) == 2


def test_a_run_records_its_cpu_capability_and_a_resume_under_another_says_both(stopped_rnn, tmp_path, caplog):
    here = torch.backends.cpu.get_cpu_capability()
    assert read_summary(stopped_rnn)["cpu_capability"] == here
    summary = read_summary(stopped_rnn)
    summary["cpu_capability"] = "OTHER"  # as if its first sitting ran on another machine's kernels
    (stopped_rnn / "summary.json").write_text(json.dumps(summary))
    code, _ = _run([*TINY_RNN, "resume=true"], tmp_path / "out", "second")
    assert code == EXIT_OK
    assert read_summary(stopped_rnn)["cpu_capability"] == f"OTHER+{here}"
    assert any("CPU capabilities OTHER+" in r.getMessage() for r in caplog.records)
    # A later sitting on the same kernels adds nothing.
    assert capabilities(f"OTHER+{here}", here) == f"OTHER+{here}" and capabilities(None, here) == here


def test_tags_and_note_are_recorded_not_keyed_and_a_resume_adds_to_them(stopped_rnn, tmp_path):
    summary = read_summary(stopped_rnn)
    assert summary["tags"] == [] and summary["note"] is None
    code, _ = _run([*TINY_RNN, "resume=true", "tags=[paper]", "note='second sitting'"], tmp_path / "out", "second")
    assert code == EXIT_OK  # found by resume=true: tags and note are no part of the run key
    resumed = read_summary(stopped_rnn)
    assert resumed["run_key"] == summary["run_key"]
    assert resumed["tags"] == ["paper"] and resumed["note"] == "second sitting"
    code, run_dir = _run([*TINY_RNN, "tags=[v2,paper]"], tmp_path / "out", "third")
    assert code == EXIT_OK and read_summary(run_dir)["tags"] == ["v2", "paper"]
