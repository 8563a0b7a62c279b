"""The matplotlib figure of one query's anatomy (`attnlab.viz.anatomy`), without widgets.

Columns, keys on the rows of every panel (top to bottom as in the sequence):

    q / k            the query vector over the (S, dk) key vectors, one colour scale
    RoPE(q) / RoPE(k)  the same after the rotary embedding (rotating layers only)
    q ⊙ k            the elementwise products (S, dk) that the dot product sums
    q · k            their row sums, bars
    bias             the additive score bias, bars apart (layers with a bias only)
    softmax          softmax(scale · q · k + bias) over the visible keys, bars, with the
                     captured weights as black ticks on them

Keys the mask hides are grey in the bar panels and get weight 0.
"""
import numpy as np
from matplotlib.ticker import MaxNLocator

from attnlab.viz.plots import tick_positions

HIDDEN_COLOR = "#c8c8c8"
BAR_COLORS = {"dots": "#4c72b0", "bias": "#dd8452", "softmax": "#55a868"}


def _short(token, width=12):
    return token if len(token) <= width else token[:width - 1] + "\u2026"


def _key_label(index, token):
    """"3: cat", or "3" when the token is the position itself (no tokens were given)."""
    return str(index) if token == str(index) else "%d: %s" % (index, _short(token))


def _limit(*arrays):
    """Symmetric colour limit: the largest magnitude, 1 for all-zero data."""
    top = max(float(np.abs(a).max()) if a.size else 0.0 for a in arrays)
    return top if top > 0 else 1.0


def draw_anatomy(figure, arrays, cmap="RdBu_r", max_ticks=24):
    """Clear `figure` and draw the anatomy of `arrays` (a QueryKeyArrays) on it.

    Args:
        figure: a matplotlib Figure.
        arrays: what `query_key_anatomy` returns.
        cmap: diverging colormap of the vector panels (centred on 0).
        max_ticks: at most this many key labels.

    Returns:
        dict panel name -> the data it shows, as drawn (read back from the artists):
        "query", "keys", ["query_rotated", "keys_rotated"], "products" (images),
        "dots", ["bias"], "softmax" (bar lengths), "captured" (tick positions).

    Example:
        >>> from matplotlib.figure import Figure
        >>> drawn = draw_anatomy(Figure(figsize=(11, 4)), query_key_anatomy(c, "mha", 0, 2))
    """
    figure.clear()
    rotated = arrays.query_rotated is not None
    heat = [("keys", "query", arrays.keys, arrays.query,
             "k" if not rotated else "k (before RoPE)", "q" if not rotated else "q")]
    if rotated:
        heat.append(("keys_rotated", "query_rotated", arrays.keys_rotated,
                     arrays.query_rotated, "RoPE(k)", "RoPE(q)"))
    heat.append(("products", None, arrays.products, None,
                 "q\u2299k" + (" (rotated)" if rotated else ""), None))
    bars = [("dots", arrays.dots, "q\u00b7k = \u03a3 q\u2299k")]
    if arrays.bias is not None:
        bars.append(("bias", arrays.bias, "bias (apart from q\u00b7k)"))
    bars.append(("softmax", arrays.weights, "softmax(%.3g\u00b7q\u00b7k%s)"
                 % (arrays.scale, " + bias" if arrays.bias is not None else "")))
    length = arrays.keys.shape[0]
    grid = figure.add_gridspec(
        2, len(heat) + len(bars), height_ratios=[1, 7],
        width_ratios=[3] * len(heat) + [1.6] * len(bars), hspace=0.2, wspace=0.35,
        left=0.1, right=0.98, top=0.86, bottom=0.14)
    vector_limit = _limit(*[a for _, _, keys, query, _, _ in heat[:-1] for a in (keys, query)])
    product_limit = _limit(arrays.products)
    rows = tick_positions(length, max_ticks)
    drawn, first = {}, None
    for column, (name, query_name, keys, query, title, query_title) in enumerate(heat):
        limit = product_limit if name == "products" else vector_limit
        ax = figure.add_subplot(grid[1, column], sharey=first)
        image = ax.imshow(keys, cmap=cmap, vmin=-limit, vmax=limit, aspect="auto",
                          interpolation="nearest")
        drawn[name] = np.asarray(image.get_array())
        ax.set_title("%s  (\u00b1%.3g)" % (title, limit), fontsize=8)
        ax.set_xlabel("feature", fontsize=8)
        ax.set_xticks(tick_positions(keys.shape[1], 8))
        ax.tick_params(labelsize=7)
        if first is None:
            first = ax
            ax.set_yticks(rows)
            ax.set_yticklabels([_key_label(r, arrays.key_tokens[r]) for r in rows])
            ax.set_ylabel("key", fontsize=8)
        else:
            ax.tick_params(labelleft=False)
        if query_name is not None:
            top = figure.add_subplot(grid[0, column], sharex=ax)
            image = top.imshow(query[np.newaxis], cmap=cmap, vmin=-limit, vmax=limit,
                               aspect="auto", interpolation="nearest")
            drawn[query_name] = np.asarray(image.get_array())[0]
            top.set_yticks([0])
            top.set_yticklabels([query_title], fontsize=8)
            top.tick_params(labelbottom=False, labelsize=7)
    visible = np.asarray(arrays.visible, bool)
    positions = np.arange(length)
    for offset, (name, values, title) in enumerate(bars):
        ax = figure.add_subplot(grid[1, len(heat) + offset], sharey=first)
        # A -inf bias (an additive mask) hides its key: no bar, a label instead.
        finite = np.isfinite(values)
        colors = np.where(visible & finite, BAR_COLORS[name], HIDDEN_COLOR)
        patches = ax.barh(positions, np.where(finite, values, 0.0), height=0.8,
                          color=list(colors))
        for row in np.flatnonzero(~finite):
            ax.text(0.0, row, " %s" % values[row], fontsize=6, va="center")
        drawn[name] = np.array([patch.get_width() for patch in patches])
        ax.axvline(0.0, color="black", linewidth=0.6)
        ax.xaxis.set_major_locator(MaxNLocator(3))
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelleft=False, labelsize=7)
        if name == "softmax":
            ticks, = ax.plot(arrays.recorded_weights, positions, linestyle="none",
                             marker="|", markersize=9, color="black", label="captured")
            drawn["captured"] = np.asarray(ticks.get_xdata(), np.float64)
            ax.set_xlim(0.0, 1.05)
            ax.legend(loc="lower right", fontsize=6, frameon=False)
    first.set_ylim(length - 0.5, -0.5)
    figure.text(0.5, 0.955, "%s \u00b7 head %d \u00b7 query %d: %s \u00b7 example %d"
                % (arrays.layer, arrays.head, arrays.query_index,
                   _short(arrays.query_token, 24), arrays.example),
                ha="center", va="center", fontsize=10)
    return drawn
