"""Looking inside attention: views, metrics, explanations, capture, run snapshots, export.

    attnlab.viz.plots       plot_attention, plot_heads, plot_layers, save_figure
    attnlab.viz.figure_export  PNG, SVG, PDF and self-contained HTML export of every view
    attnlab.viz.aggregate   head_mean, head_max, reduce_heads
    attnlab.viz.rollout     attention_rollout
    attnlab.viz.snapshots   save_attention_snapshot, load_attention_snapshots (run folders)
    attnlab.viz.capture     capture_attention (needs TensorFlow; with_qk=True adds the
                            queries and keys of the same pass: attnlab.viz.query_key)
    attnlab.viz.huggingface capture_hf_attention (Hugging Face TF models' own attentions)
    attnlab.viz.subwords    merge_pieces, word_groups (word pieces -> words)
    attnlab.viz.pretrained  load_pretrained, find_pretrained (models folder, offline)
    attnlab.viz.explorer    AttentionExplorer (needs ipywidgets; ipympl optional)
                            (its parts: explorer_panel, explorer_figure)
    attnlab.viz.line_view   TokenLineView, the "head view" (parts: line_selection,
                            line_figure)
    attnlab.viz.anatomy     query_key_anatomy, QueryKeyAnatomy (parts: anatomy_figure)
    attnlab.viz.head_metrics  head_metrics, HeadMetrics, plot_metric_map,
                            plot_head_similarity; head_metrics_table: HeadMetricsTable
    attnlab.viz.compare_attention  compare_attention, compare_snapshots,
                            plot_attention_difference
    attnlab.viz.attention_gradients  capture_attention_gradients (needs TensorFlow)
    attnlab.viz.relevance   gradient_weighted_relevance, attention_gradient_rollout,
                            plot_relevance, plot_gradient_rollout
    attnlab.viz.integrated_gradients  integrated_gradients, plot_token_salience (needs
                            TensorFlow)
    attnlab.viz.attention_flow  attention_flow, plot_attention_flow

TensorFlow and ipywidgets are imported on first use, so plotting a saved run needs neither.
A function named like its module (integrated_gradients, attention_flow, head_metrics,
compare_attention) is imported here, so that the package attribute is the function.
"""
from attnlab.viz.aggregate import head_max, head_mean, reduce_heads
from attnlab.viz.attention_flow import attention_flow, plot_attention_flow
from attnlab.viz.attention_gradients import capture_attention_gradients
from attnlab.viz.compare_attention import (
    AttentionComparison,
    compare_attention,
    compare_snapshots,
    plot_attention_difference,
)
from attnlab.viz.head_metrics import (
    HeadMetrics,
    head_metrics,
    plot_head_similarity,
    plot_metric_map,
)
from attnlab.viz.huggingface import capture_hf_attention
from attnlab.viz.integrated_gradients import integrated_gradients, plot_token_salience
from attnlab.viz.plots import plot_attention, plot_heads, plot_layers, save_figure
from attnlab.viz.pretrained import find_pretrained, load_pretrained
from attnlab.viz.relevance import (
    attention_gradient_rollout,
    gradient_weighted_relevance,
    plot_gradient_rollout,
    plot_relevance,
)
from attnlab.viz.rollout import attention_rollout
from attnlab.viz.snapshots import (
    AttentionSnapshot,
    load_attention_snapshots,
    save_attention_snapshot,
)

_LAZY = {"capture_attention": "attnlab.viz.capture",
         "AttentionExplorer": "attnlab.viz.explorer",
         "TokenLineView": "attnlab.viz.line_view",
         "HeadMetricsTable": "attnlab.viz.head_metrics_table",
         "QueryKeyAnatomy": "attnlab.viz.anatomy",
         "query_key_anatomy": "attnlab.viz.anatomy",
         "QueryKeySnapshot": "attnlab.viz.query_key"}

__all__ = ["attention_flow", "attention_gradient_rollout", "attention_rollout",
           "AttentionComparison", "AttentionExplorer", "AttentionSnapshot",
           "capture_attention", "capture_attention_gradients", "capture_hf_attention",
           "compare_attention", "compare_snapshots", "find_pretrained",
           "gradient_weighted_relevance", "head_max", "head_mean", "head_metrics",
           "HeadMetrics", "HeadMetricsTable", "integrated_gradients",
           "load_attention_snapshots", "load_pretrained", "plot_attention",
           "plot_attention_difference", "plot_attention_flow", "plot_gradient_rollout",
           "plot_head_similarity", "plot_heads", "plot_layers", "plot_metric_map",
           "plot_relevance", "plot_token_salience", "query_key_anatomy", "QueryKeyAnatomy",
           "QueryKeySnapshot", "reduce_heads", "save_attention_snapshot", "save_figure",
           "TokenLineView"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError("module 'attnlab.viz' has no attribute %r" % name)


def __dir__():
    # The lazily loaded names too, so that tab completion offers them before first use.
    return sorted(set(globals()) | set(_LAZY))
