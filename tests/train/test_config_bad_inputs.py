"""validate_config / load_config refuse bad values, naming the key: wrong types, out of
range, NaN and infinities, unknown keys; unreadable files give one line."""
import math

import pytest

from attnlab.train.config import ConfigError, load_config, validate_config

BASE = {"task": {"name": "reverse"}, "model": {"name": "transformer"}}


def _with(section, **values):
    config = {k: dict(v) for k, v in BASE.items()}
    config.setdefault(section, {}).update(values)
    return config


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("config,key", [
    # train: types
    (_with("train", epochs="ten"), "train.epochs"),
    (_with("train", epochs=2.5), "train.epochs"),
    (_with("train", epochs=True), "train.epochs"),
    (_with("train", batch_size=[32]), "train.batch_size"),
    (_with("train", seed="0"), "train.seed"),
    (_with("train", optimizer="rmsprop"), "train.optimizer"),
    (_with("train", learning_rate="fast"), "train.learning_rate"),
    (_with("train", mixed_precision="yes"), "train.mixed_precision"),
    (_with("train", jit_compile=1), "train.jit_compile"),
    (_with("train", nan_policy="ignore"), "train.nan_policy"),
    (_with("train", distribute="tpu"), "train.distribute"),
    (_with("train", verbose=2), "train.verbose"),
    (_with("train", schedule="noam"), "train.schedule"),
    # train: out of range
    (_with("train", epochs=0), "train.epochs"),
    (_with("train", epochs=-3), "train.epochs"),
    (_with("train", batch_size=0), "train.batch_size"),
    (_with("train", learning_rate=0), "train.learning_rate"),
    (_with("train", learning_rate=-0.1), "train.learning_rate"),
    (_with("train", keep_checkpoints=0), "train.keep_checkpoints"),
    (_with("train", snapshot_every=-1), "train.snapshot_every"),
    (_with("train", checkpoint_every=0), "train.checkpoint_every"),
    (_with("train", clip_norm=-1.0), "train.clip_norm"),
    (_with("train", scheduled_sampling=1.5), "train.scheduled_sampling"),
    (_with("train", collective_timeout=-5), "train.collective_timeout"),
    # train: not finite
    (_with("train", learning_rate=NAN), "train.learning_rate"),
    (_with("train", learning_rate=INF), "train.learning_rate"),
    (_with("train", clip_norm=NAN), "train.clip_norm"),
    (_with("train", clip_norm=INF), "train.clip_norm"),
    (_with("train", scheduled_sampling=NAN), "train.scheduled_sampling"),
    (_with("train", collective_timeout=INF), "train.collective_timeout"),
    # schedule
    (_with("train", schedule={"name": "linear"}), "train.schedule.name"),
    (_with("train", schedule={"name": ["noam"]}), "train.schedule.name"),
    (_with("train", schedule={"warmup_steps": 10}), "train.schedule.name"),
    (_with("train", schedule={"name": "noam", "warmup_steps": 0}),
     "train.schedule.warmup_steps"),
    (_with("train", schedule={"name": "noam", "scale": NAN}), "train.schedule.scale"),
    (_with("train", schedule={"name": "noam", "warmup": 10}), "train.schedule.warmup"),
    (_with("train", schedule={"name": "warmup_cosine", "min_learning_rate": -INF}),
     "train.schedule.min_learning_rate"),
    # eval
    (_with("eval", decode="sample"), "eval.decode"),
    (_with("eval", beam_width=0), "eval.beam_width"),
    (_with("eval", beam_width=2.0), "eval.beam_width"),
    (_with("eval", length_penalty=NAN), "eval.length_penalty"),
    (_with("eval", length_penalty=-INF), "eval.length_penalty"),
    (_with("eval", probe_size=-1), "eval.probe_size"),
    (_with("eval", batch_size="all"), "eval.batch_size"),
    (_with("eval", beams=4), "eval.beams"),
    # task and model arguments
    (_with("task", n_train="many"), "task.n_train"),
    (_with("task", n_train=1.5), "task.n_train"),
    (_with("task", num_symbols=True), "task.num_symbols"),
    (_with("task", seed=NAN), "task.seed"),
    (_with("task", n_tran=5), "task.n_tran"),
    (_with("task", name=["reverse"]), "task.name"),
    (_with("task", name="sorting"), "task.name"),
    (_with("model", d_model="64"), "model.d_model"),
    (_with("model", dropout=NAN), "model.dropout"),
    (_with("model", dropout=INF), "model.dropout"),
    (_with("model", num_heads=None), "model.num_heads"),
    (_with("model", heads=4), "model.heads"),
    (_with("model", target_vocab_size=10), "model.target_vocab_size"),
    (_with("model", name=None), "model.name"),
    (_with("model", name="lstm"), "model.name"),
    # sections
    ({"task": {"name": "reverse"}}, "model"),
    ({"task": "reverse", "model": {"name": "transformer"}}, "task"),
    (dict(BASE, training={"epochs": 1}), "training"),
    (dict(BASE, train=[1, 2]), "train"),
    (dict(BASE, **{"1": {}}), "1"),
    (_with("train", **{"2": 3}), "train.2"),
])
def test_bad_value_names_the_key(config, key):
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    message = str(info.value)
    assert message.startswith(key + ":") or message.startswith(key + " "), message
    assert "\n" not in message


def test_nested_nan_in_a_list_argument_names_its_position():
    config = {"task": {"name": "dates", "formats": ["iso", NAN]}, "model": {"name": "rnn_seq2seq"}}
    with pytest.raises(ConfigError, match=r"^task\.formats\[1\]: expected a finite number"):
        validate_config(config)


def test_not_a_mapping():
    with pytest.raises(ConfigError, match="^config: expected a mapping"):
        validate_config(["task", "model"])


@pytest.mark.parametrize("text,where", [
    ("task: {name: reverse\nmodel: {name: transformer}\n", r":2:6 is not valid YAML"),
    ("task:\n  name: reverse\n model: x\n", r":3:2 is not valid YAML"),
    ("task: [\n", r":2:1 is not valid YAML"),
    ("\tkey: 1\n", r":1:1 is not valid YAML"),
])
def test_invalid_yaml_is_one_line_with_line_and_column(tmp_path, text, where):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert where in message, message


@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.inf"])
def test_yaml_non_finite_learning_rate(tmp_path, value):
    path = tmp_path / "c.yaml"
    path.write_text("task: {name: reverse}\nmodel: {name: transformer}\n"
                    "train: {learning_rate: %s}\n" % value)
    with pytest.raises(ConfigError, match=r"^train\.learning_rate: expected a finite number"):
        load_config(str(path))


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("task: {name: reverse}  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml is not UTF-8 text \(byte 28"):
        load_config(str(path))


@pytest.mark.parametrize("make,message", [
    (lambda p: None, "cannot read config .*No such file"),
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: p.write_text(""), "is empty"),
    (lambda p: p.write_text("# only a comment\n"), "is empty"),
    (lambda p: p.write_text("just a string\n"), "^config: expected a mapping"),
])
def test_unreadable_or_empty_files(tmp_path, make, message):
    path = tmp_path / "c.yaml"
    make(path)
    with pytest.raises(ConfigError, match=message):
        load_config(str(path))


def test_finite_values_still_pass():
    config = validate_config(_with("train", learning_rate=1e-4, clip_norm=1.0))
    assert config["train"]["learning_rate"] == 1e-4 and math.isfinite(config["train"]["clip_norm"])
