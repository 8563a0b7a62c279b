"""Attention snapshots in a run folder: the trainer writes them, the viz reads them.

On-disk layout (one folder per run; the trainer owns RUN, this module owns attention/)::

    runs/NAME/attention/
        index.json              {"format": "attnlab-attention-snapshots", "version": 1,
                                 "snapshots": [{"step": 100, "epoch": 1,
                                                "file": "step-000000100.npz",
                                                "layers": {"encoder/mha": [B, H, T, S], ...}},
                                               ...]}   (sorted by step)
        step-000000100.npz      arrays "layer_0", "layer_1", ... (B, H, T, S) in the order of
                                index "layers"; "query_tokens" (B, T) and "key_tokens" (B, S)
                                unicode arrays (no pickles)

Every file is written to a temporary file in the same folder and moved into place with
os.replace, the .npz before the index, so a reader never sees a half-written snapshot and an
index entry always points to a complete file. Saving a step again replaces it.
"""
import collections
import io
import json
import os
import re
import warnings
import zipfile
import zlib

import numpy as np

from attnlab.validation import check_non_negative_int
from attnlab.viz.aggregate import as_weights
from attnlab.viz.plots import atomic_write_bytes

FORMAT = "attnlab-attention-snapshots"
VERSION = 1
SUBDIR = "attention"
INDEX = "index.json"

AttentionSnapshot = collections.namedtuple(
    "AttentionSnapshot", ["step", "epoch", "weights", "query_tokens", "key_tokens"])
AttentionSnapshot.__doc__ = """Attention of one model on one batch at one training step.

    step, epoch: training step and epoch (None for a capture outside training).
    weights: dict layer name -> (B, H, T, S) float array, in layer order.
    query_tokens: B lists of T token strings; key_tokens: B lists of S token strings
        (per layer T and S may differ for cross-attention; tokens then belong to the
        layers whose T/S match).
    """


def normalize_tokens(tokens, batch, length, name):
    """Tokens as B lists of `length` strings.

    Args:
        tokens: None (positions), one list of strings shared by every example, or B lists.
        batch: B.
        length: T (or S).
        name: argument name for errors.

    Returns:
        list of B lists of str.

    Example:
        >>> normalize_tokens(["a", "b"], 2, 2, "query_tokens")
        [['a', 'b'], ['a', 'b']]
    """
    if tokens is None:
        return [[str(i) for i in range(length)] for _ in range(batch)]
    if isinstance(tokens, str):
        raise TypeError("%s must be a sequence of tokens, got the string %r" % (name, tokens))
    tokens = list(tokens.tolist() if isinstance(tokens, np.ndarray) else tokens)
    nested = bool(tokens) and not isinstance(tokens[0], str) and \
        isinstance(tokens[0], (list, tuple, np.ndarray))
    rows = [list(t) for t in tokens] if nested else [tokens] * batch
    if len(rows) != batch:
        raise ValueError("%s has %d examples but the weights have batch size %d"
                         % (name, len(rows), batch))
    for row in rows:
        if len(row) != length:
            raise ValueError("%s has %d tokens per example but the weights have length %d"
                             % (name, len(row), length))
    return [[str(t) for t in row] for row in rows]


def check_weights_dict(weights):
    """Validate dict name -> (B, H, T, S) weights that share B; returns a new ordered dict."""
    if not isinstance(weights, dict) or not weights:
        raise ValueError("weights must be a non-empty dict name -> (B, H, T, S) array, got %r"
                         % (type(weights).__name__ if not isinstance(weights, dict) else {}))
    checked, batch = collections.OrderedDict(), None
    for name, w in weights.items():
        if not isinstance(name, str) or not name:
            raise TypeError("layer names must be non-empty strings, got %r" % (name,))
        w = as_weights(w, name="weights[%r]" % name, min_rank=4, max_rank=4)
        if batch is None:
            batch = w.shape[0]
        elif w.shape[0] != batch:
            raise ValueError("all layers must share the batch size; weights[%r] has shape %s, "
                             "an earlier layer batch size %d" % (name, w.shape, batch))
        checked[name] = w
    return checked


def make_snapshot(weights, query_tokens=None, key_tokens=None, step=None, epoch=None):
    """Check weights and tokens and bundle them as an AttentionSnapshot.

    Tokens are matched against the first layer whose T (S) they fit; the layers of one
    snapshot share B, and tokens are stored for the first layer's T and S.
    """
    weights = check_weights_dict(weights)
    first = next(iter(weights.values()))
    batch, _, t, s = first.shape
    return AttentionSnapshot(step, epoch, weights,
                             normalize_tokens(query_tokens, batch, t, "query_tokens"),
                             normalize_tokens(key_tokens, batch, s, "key_tokens"))


def attention_dir(run_dir):
    """The attention folder of a run (`run_dir` itself when it already is one)."""
    run_dir = os.fspath(run_dir)
    if os.path.basename(os.path.normpath(run_dir)) == SUBDIR or \
            os.path.exists(os.path.join(run_dir, INDEX)):
        return run_dir
    return os.path.join(run_dir, SUBDIR)


class SnapshotError(ValueError):
    """A damaged snapshot file; the message names the file and what is wrong with it."""


def _read_index(folder):
    path = os.path.join(folder, INDEX)
    if not os.path.exists(path):
        return {"format": FORMAT, "version": VERSION, "snapshots": []}
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except UnicodeDecodeError:
        raise SnapshotError("%s is damaged: not UTF-8 text" % path) from None
    except ValueError as err:  # json.JSONDecodeError
        raise SnapshotError("%s is damaged: not valid JSON (%s)" % (path, err)) from None
    if not isinstance(index, dict):
        raise SnapshotError("%s is damaged: expected a JSON object, got %s"
                            % (path, type(index).__name__))
    if index.get("format") != FORMAT:
        raise ValueError("%s is not an attention snapshot index (format %r, expected %r)"
                         % (path, index.get("format"), FORMAT))
    if not isinstance(index.get("version", 0), int) or index.get("version", 0) > VERSION:
        raise ValueError("%s has snapshot format version %r; this attnlab reads up to %d"
                         % (path, index.get("version"), VERSION))
    if not isinstance(index.get("snapshots"), list):
        raise SnapshotError("%s is damaged: \"snapshots\" is not a list" % path)
    return index


def save_attention_snapshot(run_dir, step, epoch, weights, query_tokens=None,
                            key_tokens=None, dtype=np.float32):
    """Save one step's attention weights into RUN/attention/ (atomic, replaces the step).

    Args:
        run_dir: the run folder (runs/NAME); the snapshot goes to run_dir/attention/.
        step: global training step (int >= 0); names the file.
        epoch: epoch number (int >= 0) or None.
        weights: dict layer name -> (B, H, T, S) array, in layer order.
        query_tokens: T strings (shared by the batch) or B lists of T strings.
        key_tokens: S strings or B lists of S strings (default: positions).
        dtype: stored dtype (np.float16 halves the size; weights are in [0, 1]).

    Returns:
        Path of the written .npz file.

    Example:
        >>> save_attention_snapshot("runs/demo", 100, 1, {"mha": np.ones((1, 2, 3, 3)) / 3},
        ...                         ["a", "b", "c"])
        'runs/demo/attention/step-000000100.npz'
    """
    # NumPy integers (e.g. from a saved array) count as integers.
    step, epoch = (int(n) if isinstance(n, np.integer) else n for n in (step, epoch))
    check_non_negative_int("step", step)
    if epoch is not None:
        check_non_negative_int("epoch", epoch)
    snapshot = make_snapshot(weights, query_tokens, key_tokens, step, epoch)
    folder = attention_dir(run_dir)
    os.makedirs(folder, exist_ok=True)
    names = list(snapshot.weights)
    arrays = {"layer_%d" % i: snapshot.weights[n].astype(dtype) for i, n in enumerate(names)}
    arrays["query_tokens"] = np.array(snapshot.query_tokens, dtype=np.str_)
    arrays["key_tokens"] = np.array(snapshot.key_tokens, dtype=np.str_)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    filename = "step-%09d.npz" % snapshot.step
    path = atomic_write_bytes(os.path.join(folder, filename), buffer.getvalue())

    try:
        index = _read_index(folder)
    except SnapshotError as err:
        # A damaged index must not stop a training run: it is kept beside a new one.
        kept = os.path.join(folder, INDEX + ".damaged")
        os.replace(os.path.join(folder, INDEX), kept)
        warnings.warn("%s; kept as %s, a new index starts with step %d"
                      % (err, kept, snapshot.step), stacklevel=2)
        index = {"format": FORMAT, "version": VERSION, "snapshots": []}
    # Malformed entries (no integer step) cannot be loaded anyway: dropped, not sorted.
    entries = [e for e in index["snapshots"] if isinstance(e, dict) and
               isinstance(e.get("step"), int) and e["step"] != snapshot.step]
    entries.append({"step": snapshot.step, "epoch": snapshot.epoch, "file": filename,
                    "layers": collections.OrderedDict(
                        (n, list(snapshot.weights[n].shape)) for n in names)})
    index["snapshots"] = sorted(entries, key=lambda e: e["step"])
    atomic_write_bytes(os.path.join(folder, INDEX),
                       json.dumps(index, indent=1).encode("utf-8"))
    return path


def load_attention_snapshots(run_dir):
    """Read every attention snapshot of a run, ordered by step.

    Args:
        run_dir: the run folder (or its attention/ folder).

    Returns:
        list of AttentionSnapshot, ascending step; empty when the run saved none.

    Example:
        >>> [s.step for s in load_attention_snapshots("runs/demo")]
        [100]
    """
    folder = attention_dir(run_dir)
    if not os.path.isdir(folder):
        if not os.path.isdir(os.fspath(run_dir)):
            raise FileNotFoundError("run folder %r does not exist" % os.fspath(run_dir))
        return []
    snapshots, damaged = [], []
    for entry in _read_index(folder)["snapshots"]:
        try:
            snapshots.append(_load_entry(folder, entry))
        except SnapshotError as err:
            damaged.append(str(err))
    if damaged:
        # The good snapshots are still worth showing; the warning names every bad file.
        warnings.warn("skipped %d damaged attention snapshot(s) of %d: %s"
                      % (len(damaged), len(damaged) + len(snapshots), "; ".join(damaged)),
                      stacklevel=2)
    return sorted(snapshots, key=lambda s: s.step)


def _read_npz(path, f, entry):
    with np.load(f, allow_pickle=False) as data:
        needed = ["layer_%d" % i for i in range(len(entry["layers"]))] + \
            ["query_tokens", "key_tokens"]
        missing = [n for n in needed if n not in data.files]
        if missing:
            raise SnapshotError("%s is damaged: arrays %s missing" % (path, missing))
        weights = collections.OrderedDict(
            (name, data["layer_%d" % i]) for i, name in enumerate(entry["layers"]))
        return weights, data["query_tokens"].tolist(), data["key_tokens"].tolist()


def _load_entry(folder, entry):
    """One index entry's AttentionSnapshot; SnapshotError names the file and the problem."""
    index_path = os.path.join(folder, INDEX)
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or \
            not isinstance(entry.get("layers"), dict) or \
            not isinstance(entry.get("step"), int) or isinstance(entry.get("step"), bool):
        raise SnapshotError("%s: malformed entry %r (needs step, file and layers)"
                            % (index_path, entry))
    if not re.match(r"^step-\d+\.npz$", entry["file"]):
        raise SnapshotError("%s: entry %r names an unexpected file" % (index_path, entry))
    path = os.path.join(folder, entry["file"])
    if not os.path.exists(path):
        raise SnapshotError("%s is missing (listed in %s)" % (path, INDEX))
    try:
        # Our own file object: np.load leaks its handle when the zip is unreadable.
        with open(path, "rb") as f:
            head = f.read(4)
            if head[:2] != b"PK":
                # Without this numpy would try the bytes as a pickle and say so.
                raise SnapshotError("%s is damaged: not a .npz (zip) archive (%d bytes, "
                                    "starts %r)" % (path, os.path.getsize(path), head))
            f.seek(0)
            weights, query, key = _read_npz(path, f, entry)
    except SnapshotError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as err:
        # Truncated zips, garbage bytes, object arrays (pickles are never loaded), CRC errors.
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "pickle" in reason.lower():
            reason = "holds Python objects (pickles), not a snapshot's arrays"
        raise SnapshotError("%s is damaged: %s" % (path, reason)) from None
    for name, w in weights.items():
        expected = entry["layers"][name]
        if list(w.shape) != list(expected):
            raise SnapshotError("%s is damaged: layer %r has shape %s, the index says %s"
                                % (path, name, list(w.shape), expected))
    return AttentionSnapshot(entry["step"], entry.get("epoch"), weights, query, key)
