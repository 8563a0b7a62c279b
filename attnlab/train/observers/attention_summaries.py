"""AttentionSummaries: the probe's attention maps and head metrics in TensorBoard (RUN/tb).

Written when the attention snapshots are (before training and every `every` epochs), at the
global step, so a run watched from TensorBoard shows how its heads change:

    image   attention/<layer>                      the first probe example, heads side by
                                                   side left to right (1 white pixel between)
    scalar  attention/<layer>/head<h>/<metric>     entropy, distance (self-attention),
                                                   first_token_share, max_weight (and
                                                   sink_share with sink_tokens), see
                                                   attnlab.viz.head_metrics

Image colours: weights clipped to [0, 1] through a fixed colormap (viridis: 0 dark purple,
1 yellow), the same scale at every step so images of different steps compare. Maps smaller
than 128 pixels are enlarged by repeating each cell (at most 8 x 8 pixels per weight), so
TensorBoard's display does not blur them; maps longer than 256 tokens on a side are
averaged over blocks of tokens down to at most 256 pixels per side (a 512-token map becomes
256 x 256), so that an image stays a few hundred kilobytes.
"""
import numpy as np
import tensorflow as tf

from attnlab.train.observers.attention_snapshots import ProbePass
from attnlab.train.observers.run_observer import RunObserver
from attnlab.train.observers.tensorboard import TensorBoardScalars

IMAGE_MIN_PIXELS = 128
IMAGE_MAX_PIXELS = 256
MAX_CELL_PIXELS = 8
SEPARATOR = 255  # white column between heads


def cell_pixels(t, s):
    """Pixels per weight along each axis for a (T, S) map: 1 for maps of 128+ tokens."""
    return int(max(1, min(MAX_CELL_PIXELS, IMAGE_MIN_PIXELS // max(t, s))))


def block_mean(weights, limit=IMAGE_MAX_PIXELS):
    """(H, T, S) weights averaged over blocks of f x f tokens, f = ceil(max(T, S) / limit).

    The last block of an axis may be shorter: it is the mean of what it holds.
    """
    heads, t, s = weights.shape
    factor = -(-max(t, s) // limit)
    if factor <= 1:
        return weights
    rows = -(-t // factor)
    cols = -(-s // factor)
    padded = np.zeros((heads, rows * factor, cols * factor))
    counts = np.zeros((rows * factor, cols * factor))
    padded[:, :t, :s] = weights
    counts[:t, :s] = 1.0
    sums = padded.reshape(heads, rows, factor, cols, factor).sum(axis=(2, 4))
    return sums / counts.reshape(rows, factor, cols, factor).sum(axis=(1, 3))


def attention_image(weights, cmap="viridis"):
    """One layer's heads side by side as an RGB image.

    Args:
        weights: (H, T, S) weights of one example.
        cmap: matplotlib colormap name; weights are clipped to [0, 1] first.

    Returns:
        uint8 array (T' * k, H * S' * k + H - 1, 3) with k = cell_pixels(T', S'), where
        (T', S') = (T, S), or the block means' shape beyond IMAGE_MAX_PIXELS tokens.

    Example:
        >>> attention_image(np.full((2, 4, 4), 0.25)).shape
        (32, 65, 3)
    """
    import matplotlib

    colormap = matplotlib.colormaps[cmap] if hasattr(matplotlib, "colormaps") else \
        matplotlib.cm.get_cmap(cmap)
    weights = block_mean(np.asarray(weights, np.float64))
    heads, t, s = weights.shape
    k = cell_pixels(t, s)
    rgb = colormap(np.clip(weights, 0.0, 1.0), bytes=True)[..., :3]     # (H, T, S, 3)
    rgb = rgb.repeat(k, axis=1).repeat(k, axis=2)
    separator = np.full((t * k, 1, 3), SEPARATOR, np.uint8)
    parts = []
    for h in range(heads):
        if h:
            parts.append(separator)
        parts.append(rgb[h])
    return np.concatenate(parts, axis=1)


class AttentionSummaries(RunObserver):
    """Writes the probe's attention images and head metrics to TensorBoard.

    Args:
        tensorboard: the run's TensorBoardScalars (its writer is shared: one event file
            per run folder, the one TensorBoard follows) or a log folder of its own.
        probe: (x, query_tokens, key_tokens), read as `AttentionSnapshots` reads it.
        every: epochs between summaries (None: only the one before training).
        pad_token: query tokens left out of the metrics (the probe's padding).
        sink_tokens: key tokens or positions for `sink_share` (None: not written).
        cmap: colormap of the images.
        probe_pass: a ProbePass shared with AttentionSnapshots (one probe pass per step).

    Example:
        >>> scalars = TensorBoardScalars(run.tensorboard_dir)
        >>> observers = [scalars, AttentionSummaries(scalars, probe, every=2)]
    """

    def __init__(self, tensorboard, probe, every=1, pad_token="<pad>", sink_tokens=None,
                 cmap="viridis", probe_pass=None):
        super().__init__()
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or
                                  every <= 0):
            raise ValueError("every must be a positive integer or None, got %r" % (every,))
        self.tensorboard = tensorboard
        self.probe = probe
        self.every = every
        self.pad_token = pad_token
        self.sink_tokens = sink_tokens
        self.cmap = cmap
        self.probe_pass = probe_pass or ProbePass(probe)
        self._own_writer = None

    def _writer(self):
        if isinstance(self.tensorboard, TensorBoardScalars):
            writer = self.tensorboard.writer
            if writer is None:
                raise RuntimeError("AttentionSummaries writes through the TensorBoardScalars "
                                   "it was given: list that observer before this one")
            return writer
        if self._own_writer is None:
            self._own_writer = tf.summary.create_file_writer(str(self.tensorboard))
        return self._own_writer

    def on_train_begin(self, logs=None):
        if self.epochs_done == 0 and self.global_step == 0:
            self.write()

    def on_epoch_end(self, epoch, logs=None):
        if self.every and (epoch + 1) % self.every == 0:
            self.write()

    def write(self):
        """Write the summaries of the model's current attention at the global step."""
        from attnlab.viz.head_metrics import head_metrics
        from attnlab.viz.snapshots import make_snapshot

        _, query_tokens, key_tokens = self.probe
        weights = self.probe_pass.weights(self.model, self.global_step)
        snapshot = make_snapshot(weights, query_tokens, key_tokens)
        metrics = head_metrics(snapshot, pad_token=self.pad_token,
                               sink_tokens=self.sink_tokens, similarity=None)
        writer = self._writer()
        with writer.as_default(step=self.global_step):
            for layer, w in weights.items():
                image = attention_image(w[0], self.cmap)
                tf.summary.image("attention/%s" % layer, image[np.newaxis])
            for row in metrics.rows:
                for name in metrics.metrics:
                    if row[name] is not None:
                        tf.summary.scalar("attention/%s/head%d/%s" % (row["layer"],
                                                                      row["head"], name),
                                          row[name])
        writer.flush()

    def _close(self):
        if self._own_writer is not None:
            self._own_writer.close()
            self._own_writer = None

    def on_train_end(self, logs=None):
        self._close()

    def on_run_failure(self, error):
        self._close()
