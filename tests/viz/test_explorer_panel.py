"""explorer_frames and ExplorerPanel: sources become snapshots ordered by step; a panel's
map is the indexed (or reduced) weights. References are plain NumPy indexing."""
import numpy as np
import pytest

from attnlab.viz.explorer_panel import ExplorerPanel, batch_size, explorer_frames
from attnlab.viz.snapshots import AttentionSnapshot, save_attention_snapshot

TOKENS = ["a", "b", "c"]


def _snapshot(step, seed):
    w = np.random.default_rng(seed).random((2, 2, 3, 3)).astype(np.float32)
    return AttentionSnapshot(step, step, {"enc0": w, "enc1": w[:, :1]}, [TOKENS] * 2,
                             [TOKENS] * 2)


def test_snapshot_lists_are_ordered_by_step():
    later, earlier = _snapshot(20, 0), _snapshot(10, 1)
    frames, run_dir = explorer_frames([later, earlier])
    assert [f.step for f in frames] == [10, 20] and run_dir is None
    assert batch_size(frames) == 2


def test_run_folder_source_names_its_folder(tmp_path):
    weights = {"m": np.full((1, 1, 2, 2), 0.5, np.float32)}
    save_attention_snapshot(tmp_path, 5, 0, weights, ["x", "y"])
    frames, run_dir = explorer_frames(str(tmp_path))
    assert run_dir == str(tmp_path) and [f.step for f in frames] == [5]
    np.testing.assert_array_equal(frames[0].weights["m"], weights["m"])


def test_snapshots_without_distinct_steps_are_refused():
    with pytest.raises(ValueError, match=r"distinct steps, got \[10, 10\]"):
        explorer_frames([_snapshot(10, 0), _snapshot(10, 1)])


def test_panel_starts_at_the_last_step_first_layer_head_zero():
    frames, _ = explorer_frames([_snapshot(10, 0), _snapshot(20, 1)])
    panel = ExplorerPanel(frames, "source")
    assert (panel.step, panel.layer, panel.head) == (20, "enc0", 0)
    np.testing.assert_array_equal(panel.matrix(1), frames[1].weights["enc0"][1, 0])
    panel.head = "max"
    np.testing.assert_array_equal(panel.matrix(0), frames[1].weights["enc0"][0].max(0))
    assert panel.describe() == "enc0 \u00b7 max \u00b7 step 20"
    assert panel.query_tokens(0) == TOKENS and panel.key_tokens(0) == TOKENS
