"""Config: validation names key/value/allowed, unknown keys list the valid ones, round-trips, shipped YAMLs load."""

from pathlib import Path

import pytest

from spikeforge.config import SECTIONS, TrainConfig, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_round_trip_dict_and_yaml(tmp_path):
    cfg = TrainConfig().override(["optim.name=sgd", "optim.lr=0.05", "model.kwargs.channels=[8, 16]",
                                  "loss.name=tet", "schedule.warmup_epochs=1", "optim.betas=[0.8, 0.9]"])
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    cfg.to_yaml(tmp_path / "c.yaml")
    assert TrainConfig.from_yaml(tmp_path / "c.yaml") == cfg
    assert cfg.to_dict()["version"] == 1
    assert cfg.model.kwargs == {"channels": [8, 16]}
    assert cfg.optim.betas == (0.8, 0.9)


def test_unknown_key_names_it_and_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config key 'optim.learning_rate'.*lr, weight_decay"):
        TrainConfig().override(["optim.learning_rate=0.1"])
    (tmp_path / "bad.yaml").write_text("model:\n  neurons: lif\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown config key 'model.neurons'; valid keys of 'model': name"):
        TrainConfig.from_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match=r"unknown config key 'trainer'; valid top-level keys: version, data, model"):
        TrainConfig.from_dict({"trainer": {}})


@pytest.mark.parametrize("assignment,key,value", [
    ("optim.name=rmsprop", "optim.name", "'rmsprop'"),
    ("optim.lr=-1", "optim.lr", "-1"),
    ("loss.name=hinge", "loss.name", "'hinge'"),
    ("schedule.name=linear", "schedule.name", "'linear'"),
    ("run.amp=fp16", "run.amp", "'fp16'"),
    ("data.batch_size=0", "data.batch_size", "0"),
    ("model.T=2.5", "model.T", "2.5"),
    ("run.device=tpu", "run.device", "'tpu'"),
    ("loss.label_smoothing=1.5", "loss.label_smoothing", "1.5"),
])
def test_bad_value_names_key_value_and_allowed(assignment, key, value):
    with pytest.raises(ValueError) as e:
        TrainConfig().override([assignment])
    msg = str(e.value)
    assert f"config key {key!r}" in msg and f"got {value}" in msg and "allowed:" in msg


def test_yaml_numbers_are_coerced():
    cfg = TrainConfig.from_dict({"optim": {"lr": 1, "weight_decay": "1e-4"}})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float) and cfg.optim.weight_decay == 1e-4


def test_frozen():
    with pytest.raises(Exception):
        TrainConfig().optim.lr = 1.0  # type: ignore[misc]


def test_default_yaml_equals_builtin_defaults():
    default = [p for p in CONFIGS if p.name == "default.yaml"][0]
    assert TrainConfig.from_yaml(default) == TrainConfig() == load_config()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path):
    cfg = TrainConfig.from_yaml(path)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert set(cfg.to_dict()) == {"version", *SECTIONS}


def test_set_needs_key_value():
    with pytest.raises(ValueError, match="section.key=value"):
        TrainConfig().override(["optim.lr"])


def test_duplicate_yaml_key_is_refused_naming_it(tmp_path):
    """YAML keeps the last of two equal keys silently; a config where `run:` appears twice would lose the first."""
    p = tmp_path / "dup.yaml"
    p.write_text("run:\n  epochs: 1\noptim:\n  lr: 0.1\nrun:\n  seed: 3\n")
    with pytest.raises(ValueError, match=r"dup\.yaml: key 'run' appears twice \(lines 1 and 5\)"):
        TrainConfig.from_yaml(p)
    p.write_text("run:\n  epochs: 1\n  epochs: 2\n")
    with pytest.raises(ValueError, match=r"key 'epochs' appears twice \(lines 2 and 3\)"):
        TrainConfig.from_yaml(p)
