"""Attention in TensorBoard: a Trainer fit with a probe writes the probe's attention images
and head metrics into RUN/tb; read back from the event files and checked against the run's
saved snapshots (colours through matplotlib's colormap, metrics in float64 NumPy here)."""
import glob
import io
import os

import matplotlib
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from attnlab.data.trigger import make_trigger
from attnlab.models.classifier import AttentionClassifier
from attnlab.train.config import ConfigError, validate_config
from attnlab.train.observers import AttentionSummaries, RunCounters, run_folder_observers
from attnlab.train.observers.attention_summaries import (
    attention_image,
    block_mean,
    cell_pixels,
)
from attnlab.train.trainer import Trainer
from attnlab.viz.head_metrics import head_metrics
from attnlab.viz.snapshots import load_attention_snapshots

VIRIDIS = matplotlib.colormaps["viridis"] if hasattr(matplotlib, "colormaps") else \
    matplotlib.cm.get_cmap("viridis")


def _task():
    return make_trigger(seed=0, n_train=32, n_val=8, n_test=8, num_filler=8, min_length=3,
                        max_length=6)


def _model(task):
    tf.keras.utils.set_random_seed(3)
    model = AttentionClassifier(len(task.source_vocab), task.num_classes, embed_dim=8,
                                attention="multi_head", num_heads=2)
    model(task.arrays("train")[0][:2])
    return model


def _probe(task):
    x = task.arrays("validation")[0][:3]
    tokens = [[task.source_vocab.tokens[i] for i in row] for row in x]
    return x, tokens, tokens


def _fit(folder, **kwargs):
    task = _task()
    trainer = Trainer(_model(task), tf.keras.optimizers.SGD(0.5),
                      tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      run_dir=folder, probe=_probe(task), verbose=0, **kwargs)
    trainer.fit(task.dataset("train", 16), 2)
    return task


def _events(folder):
    """{tag: {step: (plugin, value)}} of every event file in `folder`."""
    found = {}
    for path in glob.glob(os.path.join(str(folder), "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.setdefault(value.tag, {})[event.step] = (
                    value.metadata.plugin_data.plugin_name, tf.make_ndarray(value.tensor))
    return found


def _reference_metrics(w, valid):
    """Per head: entropy, distance, first-token share, max weight, by explicit loops."""
    b_size, heads, t, s = w.shape
    out = {}
    for h in range(heads):
        values = {"entropy": [], "distance": [], "first_token_share": [], "max_weight": []}
        for b in range(b_size):
            for i in range(t):
                if not valid[b, i]:
                    continue
                p = w[b, h, i].astype(np.float64)
                p = p / p.sum()
                values["entropy"].append(-sum(x * np.log(x) for x in p if x > 0))
                values["distance"].append(sum(p[j] * abs(i - j) for j in range(s)))
                values["first_token_share"].append(p[0])
                values["max_weight"].append(p.max())
        out[h] = {k: float(np.mean(v)) for k, v in values.items()}
    return out


def test_trainer_writes_attention_images_and_head_metrics_at_every_snapshot(tmp_path):
    _fit(tmp_path / "run")
    tb = tmp_path / "run" / "tb"
    # One event file: the summaries share the scalars' writer (TensorBoard follows only
    # the newest file of a folder).
    assert len(glob.glob(str(tb / "events.out.tfevents.*"))) == 1
    events = _events(tb)
    snapshots = load_attention_snapshots(str(tmp_path / "run"))
    assert [s.step for s in snapshots] == [0, 2, 4]
    images = events["attention/attention"]
    assert sorted(images) == [0, 2, 4]
    for snapshot in snapshots:
        w = snapshot.weights["attention"]                            # (3, 2, T, T)
        _, heads, t, s = w.shape
        k = min(8, 128 // t)
        plugin, (width, height, png) = images[snapshot.step]
        assert plugin == "images"
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        assert pixels.shape == (t * k, heads * s * k + heads - 1, 3)
        assert (int(width), int(height)) == (heads * s * k + heads - 1, t * k)
        for h in range(heads):
            panel = pixels[:, h * (s * k + 1):h * (s * k + 1) + s * k]
            want = VIRIDIS(w[0, h], bytes=True)[..., :3]
            np.testing.assert_array_equal(panel[::k, ::k], want)
            if h:
                assert (pixels[:, h * (s * k + 1) - 1] == 255).all()

        valid = np.array([[tok != "<pad>" for tok in row] for row in snapshot.query_tokens])
        assert not valid.all()  # the probe has padding, which the metrics leave out
        want = _reference_metrics(w, valid)
        computed = head_metrics(snapshot, pad_token="<pad>", similarity=None)
        for h in range(heads):
            for name in ("entropy", "distance", "first_token_share", "max_weight"):
                plugin, value = events["attention/attention/head%d/%s" % (h, name)][
                    snapshot.step]
                assert plugin == "scalars"
                np.testing.assert_allclose(float(value), want[h][name], rtol=2e-6,
                                           err_msg=name)
                np.testing.assert_allclose(float(value), computed.row("attention", h)[name],
                                           rtol=1e-6, err_msg=name)
    # The epoch scalars are still there, in the same file.
    assert sorted(events["loss"]) == [2, 4]


def test_attention_summaries_off_writes_no_attention_tags(tmp_path):
    _fit(tmp_path / "run", attention_summaries=False, snapshot_every=2)
    tags = _events(tmp_path / "run" / "tb")
    assert "loss" in tags and not [t for t in tags if t.startswith("attention/")]
    assert [s.step for s in load_attention_snapshots(str(tmp_path / "run"))] == [0, 4]


def test_attention_summaries_follow_snapshot_every(tmp_path):
    _fit(tmp_path / "run", snapshot_every=2)
    events = _events(tmp_path / "run" / "tb")
    assert sorted(events["attention/attention"]) == [0, 4]
    assert sorted(events["attention/attention/head1/entropy"]) == [0, 4]


def test_summaries_into_their_own_folder_with_sink_tokens(tmp_path):
    task = _task()
    model = _model(task)
    probe = _probe(task)
    observer = AttentionSummaries(str(tmp_path / "tb"), probe, every=1, sink_tokens=[-1])
    observer.set_model(model)
    step = tf.Variable(7, dtype=tf.int64)
    observer.set_counters(RunCounters(step, tf.Variable(1, dtype=tf.int64),
                                      tf.Variable(0, dtype=tf.int64)))
    observer.write()
    observer.on_train_end()
    events = _events(tmp_path / "tb")
    _, weights = model(probe[0], training=False, return_attention=True)
    w = weights["attention"].numpy().astype(np.float64)
    valid = np.array([[tok != "<pad>" for tok in row] for row in probe[1]])
    for h in range(2):
        rows = w[:, h][valid]
        want = np.mean(rows[:, -1] / rows.sum(-1))
        _, value = events["attention/attention/head%d/sink_share" % h][7]
        np.testing.assert_allclose(float(value), want, rtol=1e-6)


def test_attention_image_hand_case():
    w = np.zeros((2, 2, 3))
    w[0, :, 0] = 1.0        # head 0: everything on key 0
    w[1] = 1.0 / 3          # head 1: uniform
    image = attention_image(w)
    k = cell_pixels(2, 3)
    assert k == 8
    assert image.shape == (16, 2 * 24 + 1, 3) and image.dtype == np.uint8
    yellow = VIRIDIS(1.0, bytes=True)[:3]
    purple = VIRIDIS(0.0, bytes=True)[:3]
    assert (image[:, :8] == yellow).all() and (image[:, 8:24] == purple).all()
    assert (image[:, 24] == 255).all()
    assert (image[:, 25:] == VIRIDIS(1.0 / 3, bytes=True)[:3]).all()
    # Out-of-range values are clipped to the scale's ends.
    clipped = attention_image(np.array([[[1.5, -0.5]]]))
    assert (clipped[:, :8] == yellow).all() and (clipped[:, 8:] == purple).all()
    assert cell_pixels(512, 64) == 1 and cell_pixels(20, 20) == 6


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="every must be a positive integer"):
        AttentionSummaries(str(tmp_path), None, every=0)
    with pytest.raises(TypeError, match="attention_summaries must be a bool"):
        run_folder_observers(tmp_path / "run", attention_summaries="yes")
    task = _task()
    with pytest.raises(TypeError, match="attention_summaries must be a bool"):
        Trainer(_model(task), tf.keras.optimizers.SGD(0.1), "mse", attention_summaries=1)
    config = {"task": {"name": "reverse"}, "model": {"name": "transformer"}}
    assert validate_config(config)["train"]["attention_summaries"] is True
    config["train"] = {"attention_summaries": "no"}
    with pytest.raises(ConfigError, match="train.attention_summaries: expected bool"):
        validate_config(config)


def test_large_maps_are_block_averaged_to_at_most_256_pixels():
    rng = np.random.default_rng(0)
    w = rng.random((2, 512, 300))
    image = attention_image(w)
    # f = ceil(512 / 256) = 2: 256 x 150 blocks, one pixel each.
    assert image.shape == (256, 2 * 150 + 1, 3)
    means = block_mean(w)
    np.testing.assert_allclose(means[1, 3, 7], w[1, 6:8, 14:16].mean())
    uneven = block_mean(rng.random((1, 513, 4)))           # f = 3: the last row block is 0
    assert uneven.shape == (1, 171, 2)
    np.testing.assert_array_equal(block_mean(w[:, :256, :256]), w[:, :256, :256])


def test_snapshots_and_summaries_share_one_probe_pass_per_step(tmp_path, monkeypatch):
    from attnlab.train.observers import attention_snapshots

    calls = []
    original = attention_snapshots.probe_attention

    def counting(model, probe):
        calls.append(1)
        return original(model, probe)

    monkeypatch.setattr(attention_snapshots, "probe_attention", counting)
    _fit(str(tmp_path))
    assert len(calls) == 3          # before training and after each epoch, not twice each
    assert len(load_attention_snapshots(str(tmp_path))) == 3
