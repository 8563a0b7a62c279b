"""Query/key anatomy (the "neuron view"): how one query's attention weights come about.

For a chosen layer, head, example and query token: the query vector, every key vector,
their elementwise products and the products' sums (q · k), the scaled logits, the additive
bias apart from q · k, and the softmax; with a rotary embedding, the vectors before and
after the rotation. Everything is computed in float64 NumPy from what
`capture_attention(model, inputs, with_qk=True)` recorded in its one forward pass, so
neither TensorFlow nor the model is needed once captured.

    query_key_anatomy(captured, layer, head, query_index)   the arrays
    QueryKeyAnatomy(captured)                               widget / figure with controls

Example:
    >>> captured = capture_attention(model, ids, vocabulary=vocab, with_qk=True)
    >>> arrays = query_key_anatomy(captured, "encoder/self_attention", head=1, query_index=3)
    >>> np.allclose(arrays.weights, arrays.recorded_weights)
    True
    >>> QueryKeyAnatomy(captured)          # in a notebook cell
"""
import collections
import functools
import numbers
import os

import numpy as np

from attnlab.validation import check_choice
from attnlab.viz.anatomy_figure import draw_anatomy
from attnlab.viz.explorer_figure import png_bytes
from attnlab.viz.figure_export import (
    figure_bytes,
)
from attnlab.viz.query_key import QueryKeySnapshot, masked_softmax
from attnlab.viz.view_widget import ViewWidget
from attnlab.viz.widget_backend import BACKENDS, choose_backend

_FIELDS = ("layer", "head", "query_index", "example", "query_token", "key_tokens", "query",
           "keys", "query_rotated", "keys_rotated", "products", "dots", "scale", "scaled",
           "bias", "logits", "visible", "weights", "recorded_weights")

QueryKeyArrays = collections.namedtuple("QueryKeyArrays", _FIELDS)
QueryKeyArrays.__doc__ = """The anatomy of one query's attention, float64 NumPy arrays.

    layer, head, query_index, example: what was chosen.
    query_token: the query's token; key_tokens: the S key tokens (positions when the
        snapshot's tokens do not fit this layer's lengths).
    query: (dk,) projected query, before any rotation; keys: (S, dk), before any rotation.
    query_rotated, keys_rotated: after the rotary embedding, or None without one.
    products: (S, dk) query ⊙ key of the vectors that are multiplied (rotated ones when
        the layer rotates); dots: (S,) their row sums, q · k.
    scale: the factor of q · k; scaled: (S,) scale * dots.
    bias: (S,) additive score bias, or None when the layer had none.
    logits: (S,) scaled + bias; visible: (S,) bool, keys the mask shows.
    weights: (S,) softmax of the logits over the visible keys (0 for hidden keys).
    recorded_weights: (S,) the weights the layer returned in the captured pass.
    """


def _check_index(name, value, size, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError("%s must be an integer, got %r" % (name, value))
    if not 0 <= value < size:
        raise ValueError("%s %d is out of range: %s has %d (valid: 0..%d)"
                         % (name, value, what, size, size - 1))
    return int(value)


def _check_captured(captured):
    if not isinstance(captured, QueryKeySnapshot):
        raise TypeError("captured must come from capture_attention(model, inputs, "
                        "with_qk=True) (a QueryKeySnapshot), got %s" % type(captured).__name__)
    if not captured.query_key:
        raise ValueError("captured has no layer with recorded queries and keys (layers: %s); "
                         "they are recorded for attnlab and tf.keras MultiHeadAttention "
                         "layers with full attention on (B, T, D) inputs"
                         % list(captured.weights))
    return captured


def _check_layer(captured, layer):
    if not isinstance(layer, str):
        raise TypeError("layer must be a layer name (str), got %r" % (layer,))
    if layer not in captured.query_key:
        known = "is not a captured layer" if layer not in captured.weights else \
            "has no recorded queries and keys"
        raise ValueError("layer %r %s; layers with queries and keys: %s"
                         % (layer, known, list(captured.query_key)))
    return layer


def _tokens(rows, example, length):
    tokens = rows[example] if rows is not None and example < len(rows) else None
    if tokens is None or len(tokens) != length:  # e.g. the other side of cross-attention
        return [str(i) for i in range(length)]
    return [str(t) for t in tokens]


def query_key_anatomy(captured, layer, head, query_index, example=0):
    """The anatomy of the weights of one query of one head, as float64 arrays.

    Args:
        captured: `capture_attention(model, inputs, with_qk=True)`.
        layer: a name in `captured.query_key`.
        head: head index h < H.
        query_index: query position t < T.
        example: batch index b < B.

    Returns:
        QueryKeyArrays; its `weights` equal the captured weights of that row.

    Raises:
        TypeError: `captured` holds no queries and keys, or an index is not an integer.
        ValueError: a layer without recorded queries and keys, or an index out of range
            (the message names the argument).

    Example:
        >>> a = query_key_anatomy(captured, "mha", head=0, query_index=2)
        >>> a.products.shape, float(a.dots[0]) == float(a.products[0].sum())
        ((5, 4), True)
    """
    captured = _check_captured(captured)
    layer = _check_layer(captured, layer)
    record = captured.query_key[layer]
    batch, heads, length, key_length = record.scores_shape
    example = _check_index("example", example, batch, "the batch")
    head = _check_index("head", head, heads, "layer %r: heads" % layer)
    query_index = _check_index("query_index", query_index, length, "layer %r: queries" % layer)
    pick = (example, head)

    def row(array):  # this example's and head's part, in float64
        return np.array(array[pick], np.float64)

    query, keys = row(record.query)[query_index], row(record.key)
    query_rotated = keys_rotated = None
    if record.rotated:
        query_rotated, keys_rotated = row(record.query_rotated)[query_index], \
            row(record.key_rotated)
    dotted_query, dotted_keys = (query_rotated, keys_rotated) if record.rotated \
        else (query, keys)
    products = dotted_keys * dotted_query[np.newaxis, :]
    dots = products.sum(axis=1)
    scaled = record.scale * dots
    bias = None
    if record.bias is not None:
        bias = row(np.broadcast_to(record.bias, record.scores_shape))[query_index]
    logits = scaled if bias is None else scaled + bias
    visible = record.visible()[pick][query_index].copy()
    weights = masked_softmax(logits, visible)
    recorded = np.asarray(captured.weights[layer][pick][query_index], np.float64)
    query_tokens = _tokens(captured.query_tokens, example, length)
    return QueryKeyArrays(
        layer, head, query_index, example, query_tokens[query_index],
        _tokens(captured.key_tokens, example, key_length), query, keys, query_rotated,
        keys_rotated, products, dots, record.scale, scaled, bias, logits, visible, weights,
        recorded)


def anatomy_json(arrays):
    """`arrays` (QueryKeyArrays) as plain JSON values: lists for arrays, None kept.

    Values that are not finite (a -inf bias hides a key, as an additive mask does) become
    None: JSON has no infinity.
    """
    data = {}
    for name, value in arrays._asdict().items():
        if isinstance(value, np.ndarray):
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                value = np.where(np.isfinite(value), value, None)
            value = value.tolist()
        elif isinstance(value, (np.floating, np.integer)):
            value = value.item()
        data[name] = value
    return data


class QueryKeyAnatomy(ViewWidget):
    """Interactive query/key anatomy: layer, head, example and query controls over the
    panels of `attnlab.viz.anatomy_figure`, with export.

    Args:
        captured: `capture_attention(model, inputs, with_qk=True)`.
        layer: first layer shown (default: the first with queries and keys).
        head, query_index, example: first selection.
        backend: "auto" (ipympl when it is the active matplotlib backend, else "image"),
            "ipympl" or "image" (a PNG in an ipywidgets.Image).
        export_dir: folder the export button writes to (default: the current folder).
        cmap: diverging colormap of the vector panels.
        figsize: (width, height) in inches (default: wider with a rotary embedding).
        dpi: pixels per inch of the drawn figure.
        max_ticks: at most this many key labels.

    Returns:
        An object that displays as a widget in Jupyter; `state` is readable and settable.

    Raises:
        TypeError, ValueError: as `query_key_anatomy` for a bad source or selection.

    Example:
        >>> view = QueryKeyAnatomy(captured, head=1)
        >>> view.set_state(query_index=3)
        >>> view.state["query_index"]
        3
    """

    def __init__(self, captured, layer=None, head=0, query_index=0, example=0, backend="auto",
                 export_dir=None, cmap="RdBu_r", figsize=None, dpi=100, max_ticks=24):
        import ipywidgets as widgets
        from matplotlib.figure import Figure

        self._init_view()
        check_choice("backend", backend, BACKENDS)
        self.captured = _check_captured(captured)
        layer = next(iter(captured.query_key)) if layer is None else layer
        self.arrays = query_key_anatomy(captured, layer, head, query_index, example)
        self.export_dir = export_dir or os.getcwd()
        self.cmap = cmap
        self.max_ticks = max_ticks
        self.figsize = figsize
        self.drawn = {}
        self._png = b""
        self._mode = choose_backend(backend)
        self.figure = Figure(figsize=self._figsize(), dpi=dpi)
        if self._mode == "ipympl":
            from ipympl.backend_nbagg import Canvas, FigureManager

            canvas = Canvas(self.figure)
            self._manager = FigureManager(canvas, id(self))
            canvas.header_visible = False
        else:
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            FigureCanvasAgg(self.figure)
        self._build_controls(widgets)
        self._arrange(widgets)
        self._refresh()

    # ---------------------------------------------------------------- construction
    def _figsize(self):
        if self.figsize is not None:
            return self.figsize
        rotated = any(r.rotated for r in self.captured.query_key.values())
        return (13.5 if rotated else 11.0, 4.6)

    def _record(self):
        return self.captured.query_key[self.arrays.layer]

    def _build_controls(self, widgets):
        batch = self._record().scores_shape[0]
        self.controls = collections.OrderedDict()
        self.controls["example"] = widgets.Dropdown(
            options=[("example %d" % b, b) for b in range(batch)], value=self.arrays.example,
            description="example")
        self.controls["layer"] = widgets.Dropdown(
            options=list(self.captured.query_key), value=self.arrays.layer,
            description="layer")
        self.controls["head"] = widgets.Dropdown(description="head")
        self.controls["query"] = widgets.Dropdown(description="query")
        self.controls["export_format"] = self._build_export_controls(widgets)
        self._sync_options()
        for name, control in self.controls.items():
            control.add_class("attnlab-" + name.replace("_", "-"))
            if name != "export_format":
                control.observe(functools.partial(self._on_control, name), names="value")

    def _arrange(self, widgets):
        if self._mode == "ipympl":
            view = self.figure.canvas
        else:
            width, height = self.figure.canvas.get_width_height()
            view = widgets.Image(format="png", value=b"", layout=widgets.Layout(
                width="%dpx" % width, height="%dpx" % height, flex="0 0 auto",
                object_fit="contain"))
        view.add_class("attnlab-anatomy-figure")
        self.view = view
        column = [c for n, c in self.controls.items() if n != "export_format"]
        column += [widgets.HBox([self.controls["export_format"], self.export_button]),
                   self.status]
        self.widget = widgets.VBox(
            [widgets.HBox(column[:4], layout=widgets.Layout(flex_flow="row wrap")),
             widgets.HBox(column[4:]), view])
        self.widget.add_class("attnlab-anatomy")

    def _sync_options(self):
        """Head and query options for the current layer and example (no redraw)."""
        record = self._record()
        _, heads, length, _ = record.scores_shape
        tokens = _tokens(self.captured.query_tokens, self.arrays.example, length)
        with self._held():
            self.controls["head"].options = [("head %d" % h, h) for h in range(heads)]
            self.controls["head"].value = self.arrays.head
            self.controls["query"].options = [("%d: %s" % (i, t), i)
                                              for i, t in enumerate(tokens)]
            self.controls["query"].value = self.arrays.query_index
            self.controls["example"].value = self.arrays.example
            self.controls["layer"].value = self.arrays.layer

    # ---------------------------------------------------------------- state
    @property
    def state(self):
        """The current selection as plain Python values (JSON-serializable)."""
        a = self.arrays
        return {"layer": a.layer, "head": a.head, "query_index": a.query_index,
                "example": a.example}

    @state.setter
    def state(self, value):
        self.set_state(**dict(value))

    def set_state(self, **changes):
        """Set any of: layer, head, query_index, example. The whole selection is checked
        first (head and query_index against the new layer); one redraw follows.

        Raises:
            ValueError: an unknown name, or a value out of range (named).
            TypeError: a value of the wrong type.
        """
        unknown = sorted(set(changes) - set(self.state))
        if unknown:
            raise ValueError("unknown anatomy state %s; settable: %s"
                             % (unknown, sorted(self.state)))
        selection = dict(self.state, **changes)
        self.arrays = query_key_anatomy(self.captured, **selection)
        self._sync_options()
        self._refresh()

    def _on_control(self, name, change):
        if self._holding:
            return
        key = {"query": "query_index"}.get(name, name)
        selection = dict(self.state, **{key: change["new"]})
        if name == "layer":  # keep head and query when the new layer has them
            _, heads, length, _ = self.captured.query_key[change["new"]].scores_shape
            selection["head"] = min(selection["head"], heads - 1)
            selection["query_index"] = min(selection["query_index"], length - 1)
        self.set_state(**selection)

    # ---------------------------------------------------------------- drawing
    def _refresh(self):
        self.drawn = draw_anatomy(self.figure, self.arrays, self.cmap, self.max_ticks)
        if self._mode == "ipympl":
            self.figure.canvas.draw_idle()
        else:
            self.figure.canvas.draw()
            self._png = png_bytes(self.figure.canvas)
            self.view.value = self._png
        self.status.value = ""
        self._notify()

    def png(self):
        """The PNG bytes displayed ("image" mode) or a fresh render ("ipympl" mode)."""
        if self._mode == "image":
            return self._png
        return figure_bytes(self.figure, "png")

    # ---------------------------------------------------------------- export
    def _export_name(self, fmt):
        a = self.arrays
        return "anatomy-%s-h%d-q%d-ex%d.%s" % (a.layer, a.head, a.query_index, a.example, fmt)

    def _export_document(self, fmt):
        """The HTML page holds the figure as SVG and the state and the anatomy's arrays as
        JSON."""
        return figure_bytes(self.figure, fmt, title="query/key anatomy: %s" % self.arrays.layer,
                            data={"state": self.state, "anatomy": anatomy_json(self.arrays)})
