"""Run-folder attention snapshots: round trip, ordering, atomic replacement, bad input."""
import json
import os

import numpy as np
import pytest

from attnlab.viz.snapshots import load_attention_snapshots, save_attention_snapshot


def _weights(seed, b=2, h=2, t=3, s=3):
    rng = np.random.default_rng(seed)
    return {"enc/mha": rng.random((b, h, t, s)), "dec/cross": rng.random((b, 1, t, 4))}


def test_round_trip_ordered_by_step(tmp_path):
    run = tmp_path / "runs" / "demo"
    written = {}
    for step, epoch in ((200, 2), (100, 1), (300, 3)):
        written[step] = _weights(step)
        path = save_attention_snapshot(run, step, epoch, written[step], ["a", "b", "c"],
                                       [["x", "y", "z"], ["u", "v", "w"]])
        assert os.path.basename(path) == "step-%09d.npz" % step
    snaps = load_attention_snapshots(run)
    assert [s.step for s in snaps] == [100, 200, 300]
    assert [s.epoch for s in snaps] == [1, 2, 3]
    for snap in snaps:
        assert list(snap.weights) == ["enc/mha", "dec/cross"]
        for name, w in written[snap.step].items():
            np.testing.assert_allclose(snap.weights[name], w, rtol=1e-6)
            assert snap.weights[name].dtype == np.float32
        assert snap.query_tokens == [["a", "b", "c"]] * 2
        assert snap.key_tokens == [["x", "y", "z"], ["u", "v", "w"]]
    index = json.loads((run / "attention" / "index.json").read_text())
    assert index["format"] == "attnlab-attention-snapshots" and index["version"] == 1
    assert index["snapshots"][0]["layers"]["dec/cross"] == [2, 1, 3, 4]
    # Only the final files remain: no temporary files.
    assert sorted(p.name for p in (run / "attention").iterdir()) == [
        "index.json", "step-000000100.npz", "step-000000200.npz", "step-000000300.npz"]


def test_saving_a_step_again_replaces_it(tmp_path):
    save_attention_snapshot(tmp_path, 5, 0, _weights(1))
    new = _weights(2)
    save_attention_snapshot(tmp_path, 5, 1, new, dtype=np.float16)
    (snap,) = load_attention_snapshots(tmp_path / "attention")
    assert snap.epoch == 1 and snap.weights["enc/mha"].dtype == np.float16
    np.testing.assert_allclose(snap.weights["enc/mha"], new["enc/mha"], atol=1e-3)
    assert snap.query_tokens == [["0", "1", "2"]] * 2


def test_failed_write_leaves_previous_files(tmp_path, monkeypatch):
    save_attention_snapshot(tmp_path, 1, 0, _weights(1))
    before = (tmp_path / "attention" / "index.json").read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_attention_snapshot(tmp_path, 2, 0, _weights(2))
    monkeypatch.undo()
    assert (tmp_path / "attention" / "index.json").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "attention").iterdir()) == [
        "index.json", "step-000000001.npz"]
    assert [s.step for s in load_attention_snapshots(tmp_path)] == [1]


def test_run_without_snapshots(tmp_path):
    assert load_attention_snapshots(tmp_path) == []


def test_missing_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_attention_snapshots(tmp_path / "nope")


@pytest.mark.parametrize("step", [-1, 1.5, True, "3"])
def test_bad_step(tmp_path, step):
    with pytest.raises(ValueError, match="step must be.*%s" % str(step).replace(".", r"\.")):
        save_attention_snapshot(tmp_path, step, 0, _weights(0))


def test_bad_epoch(tmp_path):
    with pytest.raises(ValueError, match="epoch.*-2"):
        save_attention_snapshot(tmp_path, 1, -2, _weights(0))


def test_weights_must_be_rank_four(tmp_path):
    with pytest.raises(ValueError, match=r"weights\['m'\].*\(2, 3, 3\)"):
        save_attention_snapshot(tmp_path, 1, 0, {"m": np.ones((2, 3, 3))})


def test_layers_must_share_the_batch(tmp_path):
    with pytest.raises(ValueError, match=r"weights\['b'\] has shape \(3, 1, 2, 2\)"):
        save_attention_snapshot(tmp_path, 1, 0, {"a": np.ones((2, 1, 2, 2)),
                                                 "b": np.ones((3, 1, 2, 2))})


def test_empty_weights(tmp_path):
    with pytest.raises(ValueError, match="non-empty dict"):
        save_attention_snapshot(tmp_path, 1, 0, {})


def test_token_count_must_match(tmp_path):
    with pytest.raises(ValueError, match="query_tokens has 2 tokens.*length 3"):
        save_attention_snapshot(tmp_path, 1, 0, _weights(0), ["a", "b"])


def test_token_batch_must_match(tmp_path):
    with pytest.raises(ValueError, match="key_tokens has 1 examples.*batch size 2"):
        save_attention_snapshot(tmp_path, 1, 0, _weights(0), None, [["a", "b", "c"]])


def test_foreign_index_is_rejected(tmp_path):
    (tmp_path / "attention").mkdir()
    (tmp_path / "attention" / "index.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="'other'"):
        load_attention_snapshots(tmp_path)
