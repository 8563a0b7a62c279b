"""Runner: final metrics against an oracle model, model/task checks, a complete run folder."""
import copy
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import yaml

from attnlab.data.registry import make_task
from attnlab.data.sequences import make_sequence_task
from attnlab.train.config import validate_config
from attnlab.train.run_dir import RunDir
from attnlab.train.runner import (
    build_model,
    build_optimizer,
    evaluate_task,
    run_training,
    schedule_lengths,
)
from attnlab.viz.snapshots import load_attention_snapshots


class Oracle(tf.keras.Model):
    """Decodes by looking the source up in a table of answers (the decoding protocol)."""

    def __init__(self, sources, targets, vocab_size, wrong_rows=()):
        super().__init__()
        self.sources = tf.constant(sources)
        targets = targets.copy()
        for row in wrong_rows:
            targets[row, 0] = 5 if targets[row, 0] != 5 else 6
        self.targets = tf.constant(targets)
        self.vocab_size = vocab_size

    def encode(self, source):
        match = tf.reduce_all(tf.equal(self.sources[None], tf.cast(source, tf.int32)[:, None]),
                              -1)
        return {"rows": tf.argmax(tf.cast(match, tf.int32), axis=1)}

    def init_decode_state(self, memory, max_length):
        return tf.zeros_like(memory["rows"])

    def decode_step(self, tokens, memory, state, index):
        answer = tf.gather(self.targets, memory["rows"])[:, index]
        return tf.one_hot(answer, self.vocab_size) * 10.0, state

    def decode_full(self, prefix, memory):
        answer = tf.gather(self.targets, memory["rows"])[:, :tf.shape(prefix)[1]]
        return tf.one_hot(answer, self.vocab_size) * 10.0


@pytest.mark.parametrize("decode", ["greedy", "beam"])
def test_exact_match_against_an_oracle_with_known_mistakes(decode):
    task = make_sequence_task("reverse", seed=0, n_train=8, n_val=8, n_test=20, num_symbols=5,
                              min_length=2, max_length=4)
    x, y, _ = task.arrays("test")
    oracle = Oracle(x["source"], y, len(task.target_vocab), wrong_rows=[3, 11])
    config = validate_config({"task": {"name": "reverse"}, "model": {"name": "transformer"},
                              "eval": {"decode": decode, "batch_size": 8, "beam_width": 2}})
    metrics = evaluate_task(oracle, task, config)
    assert metrics["test_sequence_accuracy"] == pytest.approx(18 / 20)
    tokens = int((y != 0).sum())
    assert metrics["test_token_accuracy"] == pytest.approx((tokens - 2) / tokens)


def test_models_must_fit_the_task():
    task = make_sequence_task("copy", n_train=8, n_val=4, n_test=4, num_symbols=4,
                              min_length=2, max_length=3)
    config = validate_config({"task": {"name": "copy"}, "model": {"name": "classifier"}})
    with pytest.raises(ValueError, match="model.name: 'classifier' cannot learn the seq2seq "
                                         "task 'copy'"):
        build_model(config, task)
    model = build_model(validate_config({"task": {"name": "copy"},
                                         "model": {"name": "rnn_seq2seq"}}), task)
    assert model.source_vocab_size == len(task.source_vocab) == 8


def test_a_run_folder_has_everything_the_notebooks_read(tmp_path):
    config = validate_config({
        "task": {"name": "trigger", "n_train": 64, "n_val": 16, "n_test": 16,
                 "num_filler": 8, "max_length": 8},
        "model": {"name": "classifier", "embed_dim": 8},
        "train": {"epochs": 2, "batch_size": 16, "verbose": 0},
        "eval": {"probe_size": 3}})
    run = RunDir(str(tmp_path / "run"))
    with open(run.file("config.yaml"), "w") as f:
        yaml.safe_dump(config, f)
    # A watcher polling status.json must never see "finished" before metrics.json exists.
    finished_with_metrics = []
    write_status = run.write_status

    def recording_write_status(state, **fields):
        if state == "finished":
            finished_with_metrics.append(os.path.exists(run.file("metrics.json")))
        return write_status(state, **fields)

    run.write_status = recording_write_status
    metrics = run_training(config, run)
    assert finished_with_metrics == [True]
    folder = tmp_path / "run"
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved == pytest.approx(metrics)
    for key in ("test_accuracy", "test_attention_on_triggers", "val_loss", "loss"):
        assert np.isfinite(saved[key])
    status = json.loads((folder / "status.json").read_text())
    assert status["state"] == "finished" and status["epoch"] == 2 and status["step"] == 8
    log = (folder / "train.log").read_text().splitlines()
    assert sum(" epoch " in line for line in log) == 2 and "finished" in log[-1]
    assert os.listdir(str(folder / "tb")) and os.path.exists(folder / "checkpoints" /
                                                            "checkpoint")
    snapshots = load_attention_snapshots(str(folder))
    assert [s.step for s in snapshots] == [0, 4, 8]
    weights = snapshots[-1].weights["attention"]
    assert weights.shape == (3, 1, 8, 8)
    np.testing.assert_allclose(weights.sum(-1)[weights.sum(-1) > 0], 1.0, atol=1e-3)


@pytest.mark.parametrize("schedule", [{"name": "warmup_cosine", "warmup_steps": 3},
                                      {"name": "noam", "warmup_steps": 3}])
def test_schedule_sizes_come_from_task_and_model_without_changing_the_config(schedule):
    config = validate_config({
        "task": {"name": "trigger", "n_train": 64, "n_val": 16, "n_test": 16,
                 "num_filler": 8, "max_length": 8},
        "model": {"name": "classifier", "embed_dim": 8},
        "train": {"epochs": 3, "batch_size": 16, "schedule": schedule}})
    before = copy.deepcopy(config)
    task = make_task("trigger", **{k: v for k, v in config["task"].items() if k != "name"})
    sizes = schedule_lengths(config, task)
    # 64 examples in full batches of 16: 4 steps per epoch, 12 in all, 3 of them warmup.
    assert sizes == ({"decay_steps": 9} if schedule["name"] == "warmup_cosine" else
                     {"d_model": 8})
    rate = build_optimizer(config["train"], **sizes).get_config()["learning_rate"]["config"]
    assert rate["warmup_steps"] == 3 and {k: rate[k] for k in sizes} == sizes
    assert config == before
    if schedule["name"] == "warmup_cosine":
        with pytest.raises(ValueError, match="warmup_cosine schedule needs decay_steps"):
            build_optimizer(config["train"])
