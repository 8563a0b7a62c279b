"""One score per token as a labelled bar chart: what every explanation plot draws.

A relevance or flow matrix (B, T, S) gives token scores through one query row (`query_row`):
the first position ([CLS] in BERT-style models), the mean over all positions, or a given
index. Bars are drawn with one colour for positive and another for negative scores
(integrated gradients can be negative); long sequences get thinned tick labels.
"""
import numpy as np

from attnlab.validation import check_positive_int
from attnlab.viz.aggregate import as_weights
from attnlab.viz.plots import check_tokens, tick_positions

QUERIES = ("first", "mean")
POSITIVE_COLOR = "#c0392b"
NEGATIVE_COLOR = "#2e6da4"


def pick_example(array, example, name):
    """Row `example` of the batch axis of `array`, with errors that name the argument."""
    if isinstance(example, bool) or not isinstance(example, (int, np.integer)):
        raise TypeError("example must be an integer index into the batch, got %r" % (example,))
    if not -array.shape[0] <= example < array.shape[0]:
        raise ValueError("example %r is out of range for %s with batch size %d"
                         % (example, name, array.shape[0]))
    return array[example]


def query_row(matrix, query="first", example=0, name="matrix"):
    """The scores of every key token for one query of a (B, T, S) matrix.

    Args:
        matrix: (B, T, S) or (T, S) relevance, rollout or flow.
        query: "first" (row 0, e.g. [CLS]), "mean" (mean of all rows) or a row index.
        example: batch index when `matrix` has a batch axis.
        name: argument name for errors.

    Returns:
        (S,) float64 array.

    Example:
        >>> query_row(np.eye(3)[None], "mean").tolist()
        [0.3333333333333333, 0.3333333333333333, 0.3333333333333333]
    """
    matrix = as_weights(matrix, name=name, min_rank=2, max_rank=3).astype(np.float64)
    if matrix.ndim == 3:
        matrix = pick_example(matrix, example, name)
    if isinstance(query, str):
        if query not in QUERIES:
            raise ValueError("query must be 'first', 'mean' or a row index, got %r" % (query,))
        return matrix[0] if query == "first" else matrix.mean(axis=0)
    if isinstance(query, bool) or not isinstance(query, (int, np.integer)):
        raise TypeError("query must be 'first', 'mean' or a row index, got %r" % (query,))
    if not -matrix.shape[0] <= query < matrix.shape[0]:
        raise ValueError("query %d is out of range for %d query positions"
                         % (query, matrix.shape[0]))
    return matrix[query]


def plot_token_scores(scores, tokens=None, ax=None, title=None, ylabel="score", max_ticks=64,
                      figsize=None):
    """A bar per token: height = score, red for positive, blue for negative.

    Args:
        scores: (T,) scores.
        tokens: T labels (default: positions).
        ax: matplotlib Axes to draw into (default: a new figure).
        title: axes title.
        ylabel: label of the score axis.
        max_ticks: at most this many token labels (long sequences are thinned).
        figsize: size of a new figure (default: wide enough for the labels).

    Returns:
        The matplotlib Figure; `fig.axes[0].patches[t].get_height()` is token t's score.

    Example:
        >>> fig = plot_token_scores([0.5, -0.2, 0.1], ["the", "cat", "sat"])
    """
    import matplotlib.pyplot as plt

    scores = as_weights(scores, name="scores", min_rank=1, max_rank=1).astype(np.float64)
    tokens = check_tokens(tokens, scores.shape[0], "tokens")
    check_positive_int("max_ticks", max_ticks)
    if ax is None:
        width = min(16.0, max(4.0, 0.3 * min(len(tokens), max_ticks) + 1.5))
        _, ax = plt.subplots(figsize=figsize or (width, 3.2))
    positions = np.arange(scores.shape[0])
    colors = [POSITIVE_COLOR if s >= 0 else NEGATIVE_COLOR for s in scores]
    ax.bar(positions, scores, color=colors, width=0.8)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ticks = tick_positions(len(tokens), max_ticks)
    ax.set_xticks(ticks)
    ax.set_xticklabels([tokens[t] for t in ticks], rotation=90)
    ax.set_xlim(-0.6, scores.shape[0] - 0.4)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.figure.tight_layout()
    return ax.figure


def tokens_of(tokens, example, length):
    """The labels of one example from None, one shared list or B lists of tokens."""
    if tokens is None:
        return None
    if isinstance(tokens, str):
        raise TypeError("tokens must be a sequence of tokens, got the string %r" % (tokens,))
    tokens = list(tokens)
    if tokens and isinstance(tokens[0], (list, tuple, np.ndarray)):
        return list(pick_example(np.asarray(tokens, dtype=object), example, "tokens"))
    if len(tokens) != length:
        raise ValueError("tokens has %d tokens but the scores have %d" % (len(tokens), length))
    return tokens
