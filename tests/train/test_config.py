"""Config validation: every bad config fails before training, naming the key."""
import glob
import os

import pytest

from attnlab.train.config import ConfigError, load_config, validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = {"task": {"name": "reverse"}, "model": {"name": "transformer"}}


def _with(section, **values):
    config = {k: dict(v) for k, v in BASE.items()}
    config.setdefault(section, {}).update(values)
    return config


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))))
def test_shipped_configs_are_valid(path):
    config = load_config(path)
    assert set(config) == {"task", "model", "train", "eval"}


def test_defaults_are_filled_in():
    config = validate_config(BASE)
    assert config["train"]["epochs"] == 10 and config["train"]["optimizer"] == "adam"
    assert config["task"]["n_train"] == 10000 and config["model"]["d_model"] == 64
    assert config["eval"]["decode"] == "greedy"


@pytest.mark.parametrize("config,message", [
    ({"model": {"name": "transformer"}}, r"^task: missing section"),
    ({"task": {"seed": 1}, "model": {"name": "transformer"}}, r"^task\.name: missing"),
    (_with("task", name="sorting"), r"task\.name: unknown task 'sorting'"),
    (_with("task", n_trian=5), r"^task\.n_trian: unknown key for task 'reverse'"),
    (_with("task", n_train="many"), r"^task\.n_train: expected int, got str 'many'"),
    (_with("model", d_model=64.5), r"^model\.d_model: expected int, got float 64.5"),
    (_with("model", vocab_size=12), r"^model\.vocab_size: set from the task"),
    (_with("model", name="cnn"), r"^model\.name: unknown model 'cnn'"),
    (_with("train", epochs="ten"), r"^train\.epochs: expected int, got str 'ten'"),
    (_with("train", epochs=0), r"^train\.epochs: expected a positive number, got 0"),
    (_with("train", mixed_precision="yes"), r"^train\.mixed_precision: expected bool"),
    (_with("train", learning_rate=True), r"^train\.learning_rate: expected int or number, "
                                         r"got bool True"),
    (_with("train", optimizer="lamb"), r"^train\.optimizer: expected one of \['adam', 'sgd'\], "
                                       r"got 'lamb'"),
    (_with("train", learnig_rate=0.1), r"^train\.learnig_rate: unknown key"),
    (_with("train", schedule={"name": "step"}), r"^train\.schedule\.name: expected one of"),
    (_with("train", schedule={"name": "noam", "warmup": 5}),
     r"^train\.schedule\.warmup: unknown key"),
    (_with("eval", decode="sample"), r"^eval\.decode: expected one of"),
    (dict(BASE, extra={}), r"^extra: unknown section"),
    ([1, 2], r"^config: expected a mapping"),
])
def test_bad_configs_name_the_key(config, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(str(bad))
