"""Unit tier: every config of noderun/conf is typed by a dataclass of noderun.schema (Hydra's ConfigStore),
so composition itself refuses a key its schema lacks and a value of the wrong type."""

from __future__ import annotations

import dataclasses

import hydra
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from noderun import schema
from noderun.command import CONF_DIR, group_options

TYPED_GROUPS = ("model", "solver", "dataset", "trainer", "logger")


def _compose(overrides: list[str]):
    with hydra.initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra.compose("config", overrides=overrides)


@pytest.mark.parametrize("group", TYPED_GROUPS)
def test_each_option_of_a_group_has_a_schema_holding_exactly_its_keys(group):
    for option in group_options(group):
        extra = ["dataset.path=beats.csv"] if option == "ecg" else []
        node = _compose([f"{group}={option}", *extra])[group]
        kind = OmegaConf.get_type(node)
        assert dataclasses.is_dataclass(kind), (group, option)
        assert {f.name for f in dataclasses.fields(kind)} == set(node), (group, option)


@pytest.mark.parametrize("overrides", [
    ["model=mlp", "model.t1=2.0"],
    ["trainer.lr=fast"],
    ["solver.max_num_steps=1.5"],
    ["model.adjoint=perhaps"],
])
def test_composition_itself_refuses_unknown_keys_and_wrong_types(overrides):
    # (Hydra's `+key=` opens the config for the addition even where it is typed: noderun's pre-check
    # refuses that itself, tests/test_config.py.)
    with pytest.raises(ConfigCompositionException):
        _compose(overrides)


def test_a_rule_says_its_values_and_finds_the_first_value_it_refuses():
    cfg = _compose(["trainer.epochs=0"])
    key, value, rule = schema.rule_problem(cfg)
    assert (key, value, rule.valid()) == ("trainer.epochs", 0, "a whole number >= 1")
    assert schema.rule_problem(_compose([])) is None
    assert schema.valid_values(cfg, "seed") == "a whole number from 0 to 4294967295"
    assert schema.valid_values(cfg, "dataset.train_size") == "a whole number >= 1 or null"
    assert schema.valid_values(cfg, "tags") == "a list, e.g. [a, b]"
    assert schema.valid_values(cfg, "deterministic") == "true or false"


def test_the_task_group_mirrors_the_experiments_and_says_what_each_reads():
    from noderun.experiments import EXPERIMENTS

    assert set(group_options("task")) == set(EXPERIMENTS) == set(schema.TASK_READS)
    for task in EXPERIMENTS:
        cfg = _compose([f"task={task}"])
        assert cfg.task == task
        settings = cfg.get(task)  # a task with settings holds them under its own name, typed
        assert settings is None or dataclasses.is_dataclass(OmegaConf.get_type(settings)), task
        assert (settings is not None) == (task in schema.SCHEMAS["task"]), task


def test_a_task_added_to_the_registry_gets_its_typed_block_in_the_primary_config(monkeypatch):
    @dataclasses.dataclass
    class Settings:
        rate: float = schema.positive(0.5)

    monkeypatch.setitem(schema.SCHEMAS, "task", {**schema.SCHEMAS["task"], "decay": Settings})
    try:
        schema.register()
        fields = {f.name: f for f in dataclasses.fields(schema.Config)}
        assert "decay" in fields and "memory" in fields and "decay" in schema.preset_blocks()
        cfg = OmegaConf.structured(schema.Config)
        assert cfg.decay is None
        assert OmegaConf.get_type(OmegaConf.merge(cfg, {"decay": {"rate": 2.0}}).decay) is Settings
        with pytest.raises(Exception, match="rates"):  # a YAML setting a key its dataclass lacks
            OmegaConf.merge(cfg, {"decay": {"rates": 2.0}})
    finally:
        monkeypatch.undo()
        schema.register()
    assert "decay" not in {f.name for f in dataclasses.fields(schema.Config)}
