"""A run's identity (noderun.run.identity): one list of what is left out of the run key, read by resume
and by the report alike, and one flattening of a config."""

from __future__ import annotations

from noderun.report.collect import _flat_config
from noderun.records import flat_config
from noderun.run.identity import (NOT_A_SETTING, NOT_IN_KEY, differing_keys, is_setting, key_config, run_key,
                                  without_keys)
from omegaconf import OmegaConf


def test_every_key_left_out_of_the_run_key_is_no_setting_for_the_report_but_the_caption():
    # The report prints a preset's caption above its table; every other key the run key leaves out
    # says where things are kept or how they are shown, so it must not split the report's rows either.
    for key in NOT_IN_KEY:
        assert is_setting(key) == (key == "caption"), key
    assert not is_setting("seed") and "seed" not in NOT_IN_KEY  # seeds are repeats: distinct runs, one row


def test_a_key_inside_a_left_out_group_is_left_out_and_a_longer_name_is_not():
    assert not is_setting("paths.output_root") and not is_setting("dataset.root")
    assert is_setting("dataset.root_size") and is_setting("trainer.epochs") and is_setting("seedling")


def test_the_report_drops_what_the_run_key_drops_and_keeps_what_it_keeps():
    config = {"seed": 3, "device": "cpu", "threads": 1, "tags": ["a"], "note": "n", "caption": "c",
              "paths": {"output_root": "out"},
              "trainer": {"epochs": 2, "progress": True, "measure_step": True},
              "model": {"name": "odenet", "adjoint": False}, "solver": {"rtol": 0.001}}
    key = key_config(OmegaConf.create(config))
    columns = _flat_config(config, "odenet")
    assert set(columns) == {"caption", "trainer.epochs", "model.name", "model.adjoint", "solver.rtol"}
    # the run key keeps the seed (a run with another seed is another run) and nothing of the rest
    assert set(flat_config(key)) == {"seed", "trainer.epochs", "model.name", "model.adjoint", "solver.rtol"}
    # trainer.measure_step (only how a step is timed) changes neither the key nor the report's rows
    other = {**config, "trainer": {**config["trainer"], "measure_step": False}}
    assert run_key(key_config(OmegaConf.create(other))) == run_key(key)
    assert _flat_config(other, "odenet") == columns


def test_flat_config_and_the_keys_that_differ():
    assert flat_config({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": [1, 2], "d": None}
    # an earlier run's key config is read as today's: solver.path was added later (torchdiffeq then)
    old = {"model": {"name": "odenet"}, "solver": {"rtol": 0.001}, "speed": {"compile": False}}
    new = {"model": {"name": "odenet"}, "solver": {"rtol": 0.001, "path": "torchdiffeq"}, "speed": {"compile": False}}
    assert differing_keys(old, new) == []
    assert differing_keys(old, {**new, "solver": {"rtol": 0.01, "path": "device"}}) == ["solver.path", "solver.rtol"]
    assert "experiment" in NOT_A_SETTING


def test_a_run_made_before_the_configs_were_typed_keeps_its_key():
    # Typing the configs (noderun.schema) added null preset blocks to every config and dropped the t1 a
    # preset had set on models that never read it (table1_rk4's MLP and ResNet): resume still finds such runs.
    import hydra

    from noderun.command import CONF_DIR
    from noderun.run.identity import has_key

    with hydra.initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        today = hydra.compose("config", overrides=["experiment=table1_rk4", "model=mlp"])
    assert today.memory is None and "t1" not in today.model
    old = key_config(today)
    assert "memory" not in old  # a null block is no part of the key, as its absence was not
    old["model"]["t1"] = 2.0
    assert has_key({"key_config": old, "run_key": "from-before"}, run_key(key_config(today)))
    assert not has_key({"key_config": {**old, "seed": 1}, "run_key": "x"}, run_key(key_config(today)))


def test_a_key_the_task_does_not_read_is_no_part_of_its_run_key():
    import hydra

    from noderun.command import CONF_DIR
    from noderun.run.identity import has_key

    with hydra.initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        memory = hydra.compose("config", overrides=["experiment=memory"])
        other_lr = hydra.compose("config", overrides=["experiment=memory", "trainer.lr=0.5", "model=resnet"])
        other_path = hydra.compose("config", overrides=["experiment=memory", "solver.path=torchdiffeq"])
        train = hydra.compose("config", overrides=["trainer.lr=0.5"])
    key = key_config(memory)
    assert "trainer" not in key and "model" not in key and set(key["solver"]) == {"path"}
    assert run_key(key_config(other_lr)) == run_key(key) != run_key(key_config(other_path))
    assert key_config(train)["trainer"]["lr"] == 0.5  # Table 1's training reads the trainer
    # a memory run recorded before (its key config held every group) is found by today's key
    old = without_keys({**OmegaConf.to_container(memory, resolve=True), "speed": {"compile": False}}, NOT_IN_KEY)
    assert has_key({"key_config": old, "run_key": "from-before"}, run_key(key))
