"""Static attention heatmaps: one map, the heads of a layer, a layers x heads grid, export.

Maps are drawn with matplotlib's `imshow` (one raster image, nearest interpolation), which
stays fast and readable for 512+ tokens where one rectangle per cell (seaborn's heatmap)
does not; tick labels are thinned to at most `max_ticks` per axis.
"""
import math

import numpy as np

from attnlab.validation import check_positive_int
from attnlab.viz.aggregate import as_weights
from attnlab.viz.figure_export import (  # noqa: F401  (their home before figure_export)
    EXPORT_FORMATS,
    atomic_write_bytes,
    export_format,
    save_figure_as,
)


def tick_positions(length, max_ticks):
    """Evenly spaced tick indices: every k-th token so that at most `max_ticks` are labelled.

    Args:
        length: number of tokens.
        max_ticks: largest number of labels (>= 1).

    Returns:
        list of int indices starting at 0.

    Example:
        >>> tick_positions(10, 4)
        [0, 3, 6, 9]
    """
    check_positive_int("max_ticks", max_ticks)
    step = max(1, int(math.ceil(length / float(max_ticks))))
    return list(range(0, length, step))


def check_tokens(tokens, length, name):
    """Token labels as a list of `length` strings (indices when `tokens` is None)."""
    if tokens is None:
        return [str(i) for i in range(length)]
    if isinstance(tokens, str):
        raise TypeError("%s must be a sequence of tokens, got the string %r" % (name, tokens))
    tokens = [str(t) for t in tokens]
    if len(tokens) != length:
        raise ValueError("%s has %d tokens but the weights have %d along that axis"
                         % (name, len(tokens), length))
    return tokens


def _new_axes(figsize=None):
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def _label_axes(ax, query_tokens, key_tokens, max_ticks, offset=(0, 0)):
    rows = tick_positions(len(query_tokens), max_ticks)
    cols = tick_positions(len(key_tokens), max_ticks)
    ax.set_yticks([r + offset[0] for r in rows])
    ax.set_yticklabels([query_tokens[r] for r in rows])
    ax.set_xticks([c + offset[1] for c in cols])
    ax.set_xticklabels([key_tokens[c] for c in cols], rotation=90)
    ax.set_ylabel("query")
    ax.set_xlabel("key")


def plot_attention(weights, query_tokens=None, key_tokens=None, ax=None, cmap="viridis",
                   vmin=None, vmax=None, colorbar=True, max_ticks=32, title=None):
    """Labelled heatmap of one attention map.

    Args:
        weights: (T, S) attention weights (row t: how query t spreads over the keys).
        query_tokens: T labels for the rows (default: positions).
        key_tokens: S labels for the columns (default: positions).
        ax: matplotlib Axes to draw into (default: a new figure).
        cmap: colormap name.
        vmin, vmax: colour scale limits; pass the same values to share one scale across
            panels (default: this map's min and max).
        colorbar: add a colour bar next to the map.
        max_ticks: at most this many labels per axis (long sequences are thinned).
        title: optional axes title.

    Returns:
        The matplotlib AxesImage; `image.get_array()` holds the drawn (T, S) data.

    Example:
        >>> image = plot_attention(np.eye(3), ["a", "b", "c"], ["a", "b", "c"])
    """
    weights = as_weights(weights, max_rank=2)
    query_tokens = check_tokens(query_tokens, weights.shape[0], "query_tokens")
    key_tokens = check_tokens(key_tokens, weights.shape[1], "key_tokens")
    if ax is None:
        ax = _new_axes()
    image = ax.imshow(weights, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest",
                      aspect="auto")
    _label_axes(ax, query_tokens, key_tokens, max_ticks)
    if title is not None:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax)
    return image


def _example(weights, example, name):
    # A float or bool index would fail later as a bare NumPy IndexError (or pick row 1).
    if isinstance(example, bool) or not isinstance(example, (int, np.integer)):
        raise TypeError("example must be an integer index into the batch, got %r" % (example,))
    weights = as_weights(weights, name=name, min_rank=3)
    if weights.ndim == 4:
        if not -weights.shape[0] <= example < weights.shape[0]:
            raise ValueError("example %r is out of range for %s with batch size %d"
                             % (example, name, weights.shape[0]))
        weights = weights[example]
    return weights


def plot_heads(weights, query_tokens=None, key_tokens=None, example=0, ncols=4,
               share_scale=True, cmap="viridis", max_ticks=16, figsize=None):
    """The heads of one layer as a grid of labelled heatmaps.

    Args:
        weights: (H, T, S) or (B, H, T, S) weights of one layer.
        query_tokens, key_tokens: T and S labels (default: positions).
        example: batch index used when `weights` has a batch axis.
        ncols: panels per row.
        share_scale: one colour scale (global min..max) and one colour bar for all heads.
        cmap: colormap name.
        max_ticks: at most this many labels per axis and panel.
        figsize: figure size in inches (default: 3 per panel).

    Returns:
        The matplotlib Figure; `fig.axes[h].images[0]` is head h's image.

    Example:
        >>> fig = plot_heads(np.random.rand(2, 4, 5, 5), example=1)
    """
    import matplotlib.pyplot as plt

    weights = _example(weights, example, "weights")
    heads = weights.shape[0]
    check_positive_int("ncols", ncols)
    ncols = min(ncols, heads)
    nrows = int(math.ceil(heads / float(ncols)))
    fig, axes = plt.subplots(nrows, ncols, squeeze=False,
                             figsize=figsize or (3 * ncols, 3 * nrows))
    vmin, vmax = (float(weights.min()), float(weights.max())) if share_scale else (None, None)
    image = None
    for h in range(heads):
        ax = axes[h // ncols][h % ncols]
        image = plot_attention(weights[h], query_tokens, key_tokens, ax=ax, cmap=cmap,
                               vmin=vmin, vmax=vmax, colorbar=not share_scale,
                               max_ticks=max_ticks, title="head %d" % h)
    for extra in range(heads, nrows * ncols):
        fig.delaxes(axes[extra // ncols][extra % ncols])
    if share_scale:
        fig.colorbar(image, ax=[ax for ax in fig.axes])
    return fig


def plot_layers(layers, example=0, share_scale=True, cmap="viridis", thumb_size=1.2):
    """A layers x heads grid of unlabelled thumbnails.

    Args:
        layers: dict name -> (B, H, T, S) or (H, T, S) weights, in layer order (a list is
            named "layer 0", "layer 1", ...). Layers may differ in H, T and S.
        example: batch index used for weights with a batch axis.
        share_scale: one colour scale over all thumbnails.
        cmap: colormap name.
        thumb_size: size of one thumbnail in inches.

    Returns:
        The matplotlib Figure; row l holds layer l, column h head h
        (`fig.axes[l * max_heads + h]`); unused cells are hidden.

    Example:
        >>> maps = {"enc0": np.random.rand(1, 2, 4, 4), "enc1": np.random.rand(1, 2, 4, 4)}
        >>> fig = plot_layers(maps)
    """
    import matplotlib.pyplot as plt

    if not isinstance(layers, dict):
        layers = {"layer %d" % i: w for i, w in enumerate(layers)}
    if not layers:
        raise ValueError("plot_layers needs at least one layer, got none")
    maps = {name: _example(w, example, "layers[%r]" % name) for name, w in layers.items()}
    max_heads = max(w.shape[0] for w in maps.values())
    fig, axes = plt.subplots(len(maps), max_heads, squeeze=False,
                             figsize=(thumb_size * max_heads + 1, thumb_size * len(maps)))
    vmin = min(float(w.min()) for w in maps.values()) if share_scale else None
    vmax = max(float(w.max()) for w in maps.values()) if share_scale else None
    image = None
    for row, (name, w) in enumerate(maps.items()):
        for h in range(max_heads):
            ax = axes[row][h]
            ax.set_xticks([])
            ax.set_yticks([])
            if h >= w.shape[0]:
                ax.set_visible(False)
                continue
            image = ax.imshow(w[h], cmap=cmap, vmin=vmin, vmax=vmax,
                              interpolation="nearest", aspect="auto")
            if row == 0:
                ax.set_title("head %d" % h, fontsize=8)
            if h == 0:
                ax.set_ylabel(name, fontsize=8)
    if share_scale:
        fig.colorbar(image, ax=[ax for ax in fig.axes if ax.get_visible()])
    return fig


def save_figure(fig, path, format=None, dpi=None):
    """Save a figure as PNG, SVG, PDF or self-contained HTML, atomically.

    Args:
        fig: matplotlib Figure.
        path: target file; its suffix (.png, .svg, .pdf, .html) picks the format unless
            `format` is set.
        format: one of "png", "svg", "pdf", "html".
        dpi: resolution for PNG (default: the figure's).

    Returns:
        The path written.

    Example:
        >>> save_figure(plot_heads(np.random.rand(2, 3, 3)), "heads.svg")
        'heads.svg'
    """
    return save_figure_as(fig, path, format=format, dpi=dpi, bbox_inches="tight")
