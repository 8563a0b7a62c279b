"""Looking at attention: heatmaps, head reductions, rollout, capture, run snapshots, explorer.

    attnlab.viz.plots       plot_attention, plot_heads, plot_layers, save_figure
    attnlab.viz.aggregate   head_mean, head_max, reduce_heads
    attnlab.viz.rollout     attention_rollout
    attnlab.viz.snapshots   save_attention_snapshot, load_attention_snapshots (run folders)
    attnlab.viz.capture     capture_attention (needs TensorFlow)
    attnlab.viz.huggingface capture_hf_attention (Hugging Face TF models' own attentions)
    attnlab.viz.subwords    merge_pieces, word_groups (word pieces -> words)
    attnlab.viz.pretrained  load_pretrained, find_pretrained (models folder, offline)
    attnlab.viz.explorer    AttentionExplorer (needs ipywidgets; ipympl optional)
                            (its parts: explorer_panel, explorer_figure)

The TensorFlow and widget modules are imported on first use, so plotting a saved run
needs neither.
"""
from attnlab.viz.aggregate import head_max, head_mean, reduce_heads
from attnlab.viz.huggingface import capture_hf_attention
from attnlab.viz.plots import plot_attention, plot_heads, plot_layers, save_figure
from attnlab.viz.pretrained import find_pretrained, load_pretrained
from attnlab.viz.rollout import attention_rollout
from attnlab.viz.snapshots import (
    AttentionSnapshot,
    load_attention_snapshots,
    save_attention_snapshot,
)

_LAZY = {"capture_attention": "attnlab.viz.capture",
         "AttentionExplorer": "attnlab.viz.explorer"}

__all__ = ["AttentionExplorer", "AttentionSnapshot", "attention_rollout", "capture_attention",
           "capture_hf_attention", "find_pretrained", "head_max", "head_mean",
           "load_attention_snapshots", "load_pretrained", "plot_attention", "plot_heads",
           "plot_layers", "reduce_heads", "save_attention_snapshot", "save_figure"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError("module 'attnlab.viz' has no attribute %r" % name)


def __dir__():
    # The lazily loaded names too, so that tab completion offers them before first use.
    return sorted(set(globals()) | set(_LAZY))
