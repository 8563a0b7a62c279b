"""AttentionSnapshots: the attention of a fixed probe batch, saved into RUN/attention/."""
import collections
import inspect

import numpy as np

from attnlab.train.observers.run_observer import RunObserver


class AttentionSnapshots(RunObserver):
    """Saves the probe's attention weights before training and every `every` epochs.

    A model whose call accepts `return_attention=True` returns (output, weights), with
    weights a dict layer name -> (B, H, T, S); any other model (e.g. a functional model of
    attnlab or tf.keras attention layers) is read by `attnlab.viz.capture_attention`. The
    format belongs to attnlab.viz.snapshots, which the notebooks read.

    Args:
        run_path: the run folder.
        probe: (x, query_tokens, key_tokens): a fixed batch and its tokens.
        every: epochs between snapshots (None: only the one before training).
        probe_pass: a ProbePass shared with other observers of the same probe (the
            TensorBoard summaries), so the probe runs once per step; default its own.

    Example:
        >>> observer = AttentionSnapshots("runs/demo", (x[:4], tokens, tokens), every=2)
    """

    def __init__(self, run_path, probe, every=1, probe_pass=None):
        super().__init__()
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or
                                  every <= 0):
            raise ValueError("every must be a positive integer or None, got %r" % (every,))
        self.run_path = str(run_path)
        self.probe = probe
        self.every = every
        self.probe_pass = probe_pass or ProbePass(probe)

    def on_train_begin(self, logs=None):
        if self.epochs_done == 0 and self.global_step == 0:
            self._save(0)

    def on_epoch_end(self, epoch, logs=None):
        if self.every and (epoch + 1) % self.every == 0:
            self._save(epoch + 1)

    def _save(self, epoch):
        # Imported here: the viz stack (matplotlib) loads only for runs that snapshot.
        from attnlab.viz.snapshots import save_attention_snapshot

        _, query_tokens, key_tokens = self.probe
        save_attention_snapshot(self.run_path, self.global_step, epoch,
                                self.probe_pass.weights(self.model, self.global_step),
                                query_tokens, key_tokens)


class ProbePass:
    """The probe's attention at a global step, computed once for every observer that asks.

    Example:
        >>> shared = ProbePass(probe)
        >>> shared.weights(model, 100) is shared.weights(model, 100)   # one forward pass
        True
    """

    def __init__(self, probe):
        self.probe = probe
        self._key = None
        self._weights = None

    def weights(self, model, step):
        """`probe_attention(model, probe)` at `step`, reused while model and step stay."""
        key = (id(model), step)
        if key != self._key:
            self._weights = probe_attention(model, self.probe)
            self._key = key
        return self._weights


def probe_attention(model, probe):
    """The model's attention on the probe batch: OrderedDict layer -> (B, H, T, S) float32.

    Snapshot tokens belong to the first layer, so a layer whose (T, S) the probe's tokens
    fit comes first (for a seq2seq model, the cross-attention: target queries over source
    keys); the other layers keep the model's order.

    Args:
        model: a model whose call takes `return_attention=True` and then returns
            (output, weights dict), or any model `attnlab.viz.capture_attention` reads.
        probe: (x, query_tokens, key_tokens).
    """
    x, query_tokens, key_tokens = probe
    if _takes_return_attention(model):
        _, weights = model(x, training=False, return_attention=True)
    else:
        from attnlab.viz.capture import capture_attention

        weights = capture_attention(model, x).weights
    weights = {name: np.asarray(w, np.float32) for name, w in weights.items()}
    t, s = len(query_tokens[0]), len(key_tokens[0])
    names = sorted(weights, key=lambda n: weights[n].shape[2:] != (t, s))
    return collections.OrderedDict((name, weights[name]) for name in names)


def _takes_return_attention(model):
    try:
        return "return_attention" in inspect.signature(model.call).parameters
    except (TypeError, ValueError):
        return False
