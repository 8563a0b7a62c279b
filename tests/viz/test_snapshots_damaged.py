"""Damaged run folders: a bad index.json is named with what is wrong; bad .npz snapshots are
skipped with a warning naming each, and the good ones still load."""
import io
import json
import pickle
import warnings

import numpy as np
import pytest

from attnlab.viz.snapshots import SnapshotError, load_attention_snapshots, save_attention_snapshot


def _weights(seed):
    return {"enc/mha": np.random.default_rng(seed).random((1, 2, 3, 3))}


@pytest.fixture
def run(tmp_path):
    path = tmp_path / "demo"
    for step in (100, 200, 300):
        save_attention_snapshot(path, step, step // 100, _weights(step), ["a", "b", "c"])
    return path


def _npz(run, step):
    return run / "attention" / ("step-%09d.npz" % step)


@pytest.mark.parametrize("text,problem", [
    ("{not json", "not valid JSON"),
    ('{"format": "attnlab-attention-snapshots", "version": 1, "snapshots": [', "not valid JSON"),
    ("", "not valid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"format": "attnlab-attention-snapshots", "version": 1, "snapshots": 3}',
     '"snapshots" is not a list'),
])
def test_corrupt_index_names_the_file(run, text, problem):
    (run / "attention" / "index.json").write_text(text)
    with pytest.raises(SnapshotError) as info:
        load_attention_snapshots(run)
    message = str(info.value)
    assert "index.json is damaged" in message and problem in message
    assert "\n" not in message


def test_index_not_utf8(run):
    (run / "attention" / "index.json").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(SnapshotError, match="index.json is damaged: not UTF-8"):
        load_attention_snapshots(run)


def _damage_truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _damage_garbage(path):
    path.write_bytes(b"\x00garbage" * 50)


def _damage_empty(path):
    path.write_bytes(b"")


def _damage_pickle(path):
    # An .npz whose array is an object array: loading it would need pickles.
    buffer = io.BytesIO()
    np.savez(buffer, layer_0=np.array([{"x": 1}], dtype=object),
             query_tokens=np.array([["a"]]), key_tokens=np.array([["a"]]))
    path.write_bytes(buffer.getvalue())


def _damage_raw_pickle(path):
    path.write_bytes(pickle.dumps({"layer_0": [1, 2, 3]}))


def _damage_missing_array(path):
    buffer = io.BytesIO()
    np.savez(buffer, layer_0=np.ones((1, 2, 3, 3)))
    path.write_bytes(buffer.getvalue())


def _damage_wrong_shape(path):
    buffer = io.BytesIO()
    np.savez(buffer, layer_0=np.ones((1, 1, 3, 3)), query_tokens=np.array([["a", "b", "c"]]),
             key_tokens=np.array([["a", "b", "c"]]))
    path.write_bytes(buffer.getvalue())


def _damage_delete(path):
    path.unlink()


def _damage_corrupt_middle(path):
    data = bytearray(path.read_bytes())
    for i in range(60, min(len(data) - 60, 400)):
        data[i] ^= 0x5A  # compressed payload: CRC / zlib errors when read
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,problem", [
    (_damage_truncate, "is damaged"),
    (_damage_garbage, "not a .npz (zip) archive"),
    (_damage_empty, "not a .npz (zip) archive"),
    (_damage_pickle, "pickles"),
    (_damage_raw_pickle, "not a .npz (zip) archive"),
    (_damage_missing_array, "arrays ['query_tokens', 'key_tokens'] missing"),
    (_damage_wrong_shape, "has shape [1, 1, 3, 3], the index says [1, 2, 3, 3]"),
    (_damage_delete, "is missing"),
    (_damage_corrupt_middle, "is damaged"),
], ids=["truncated", "garbage", "empty", "object-array", "raw-pickle", "missing-array",
        "wrong-shape", "deleted", "corrupt-bytes"])
def test_one_damaged_snapshot_among_good_ones(run, damage, problem):
    damage(_npz(run, 200))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        snaps = load_attention_snapshots(run)
    assert [s.step for s in snaps] == [100, 300]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "skipped 1 damaged attention snapshot(s) of 3" in messages[0]
    assert "step-000000200.npz" in messages[0] and problem in messages[0], messages[0]
    assert "step-000000100.npz" not in messages[0]
    np.testing.assert_allclose(snaps[0].weights["enc/mha"], _weights(100)["enc/mha"], rtol=1e-6)


def test_every_snapshot_damaged_gives_none_and_names_all(run):
    for step in (100, 200, 300):
        _damage_garbage(_npz(run, step))
    with pytest.warns(UserWarning) as caught:
        assert load_attention_snapshots(run) == []
    message = str(caught[0].message)
    assert all(("step-%09d.npz" % s) in message for s in (100, 200, 300))


@pytest.mark.parametrize("entry,problem", [
    ({"step": 400, "file": "../../etc/passwd", "layers": {}}, "names an unexpected file"),
    ({"step": 400}, "malformed entry"),
    ("step-000000400.npz", "malformed entry"),
    ({"step": "400", "file": "step-000000400.npz", "layers": {}}, "malformed entry"),
])
def test_bad_index_entry_is_skipped_with_a_warning(run, entry, problem):
    path = run / "attention" / "index.json"
    index = json.loads(path.read_text())
    index["snapshots"].append(entry)
    path.write_text(json.dumps(index))
    with pytest.warns(UserWarning, match=problem):
        snaps = load_attention_snapshots(run)
    assert [s.step for s in snaps] == [100, 200, 300]


def test_saving_after_a_damaged_entry_keeps_working(run):
    path = run / "attention" / "index.json"
    index = json.loads(path.read_text())
    index["snapshots"].append("junk")
    path.write_text(json.dumps(index))
    save_attention_snapshot(run, 400, 4, _weights(400), ["a", "b", "c"])
    # The malformed entry is dropped by the save: nothing left to warn about.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [s.step for s in load_attention_snapshots(run)] == [100, 200, 300, 400]


def test_saving_after_a_damaged_index_keeps_it_beside_a_new_one(run):
    # A training run's next snapshot must not fail on a damaged index; nothing is lost.
    path = run / "attention" / "index.json"
    path.write_text("{not json")
    with pytest.warns(UserWarning, match=r"index.json is damaged.*kept as .*index.json.damaged"):
        save_attention_snapshot(run, 400, 4, _weights(400), ["a", "b", "c"])
    assert (run / "attention" / "index.json.damaged").read_text() == "{not json"
    assert [s.step for s in load_attention_snapshots(run)] == [400]
    assert _npz(run, 100).exists()
