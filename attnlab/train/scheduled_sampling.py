"""Scheduled sampling (Bengio et al. 2015) for teacher-forced seq2seq training.

Teacher forcing feeds the decoder the gold previous token; at inference it sees its own
predictions, and errors it never saw in training compound (exposure bias). Scheduled
sampling replaces some gold decoder inputs by the model's own predictions, with a
probability that ramps up over training.
"""
import tensorflow as tf

from attnlab.validation import check_number, check_positive_int


class ScheduledSampling:
    """Mixes the model's own predictions into the decoder inputs of a training batch.

    The predictions come from one teacher-forced pass (training=False) over the batch:
    the prediction for position t becomes the candidate input of position t + 1 (the
    one-pass approximation; the first input, <s>, and padding are never replaced). The
    replacement noise is stateless, seeded from (seed, step), so a resumed run draws the
    same replacements as an uninterrupted one.

    Args:
        max_rate: final probability of feeding the model's own token, in (0, 1].
        ramp_epochs: epochs over which the rate grows linearly to `max_rate`.
        target_key: key of the decoder inputs in the batch's input dict.
        pad_id: padding id, never replaced.
        seed: seed of the replacement noise.

    Example:
        >>> trainer = Trainer(model, optimizer, loss,
        ...                   scheduled_sampling=ScheduledSampling(0.5, ramp_epochs=10))
    """

    def __init__(self, max_rate, ramp_epochs, target_key="target_in", pad_id=0, seed=0):
        self.max_rate = float(check_number("max_rate", max_rate, above=0, at_most=1))
        self.ramp_epochs = check_positive_int("ramp_epochs", ramp_epochs)
        self.target_key = target_key
        self.pad_id = pad_id
        self.seed = seed

    def rate(self, epoch):
        """Probability of replacing a decoder input during 0-based `epoch`."""
        progress = tf.minimum(1.0, tf.cast(epoch + 1, tf.float32) / self.ramp_epochs)
        return self.max_rate * progress

    def __call__(self, model, inputs, epoch, step):
        """The batch's input dict with some decoder inputs replaced by predictions."""
        if not isinstance(inputs, dict) or self.target_key not in inputs:
            raise ValueError("scheduled sampling needs a dict of inputs with key %r, got %r"
                             % (self.target_key, inputs if not isinstance(inputs, dict)
                                else sorted(inputs)))
        gold = inputs[self.target_key]
        logits = model(inputs, training=False)
        guess = tf.argmax(logits, axis=-1, output_type=gold.dtype)
        shifted = tf.concat([gold[:, :1], guess[:, :-1]], axis=1)
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
        noise = tf.random.stateless_uniform(tf.shape(gold), seed=seed)
        positions = tf.range(tf.shape(gold)[1])[tf.newaxis, :]
        swap = (noise < self.rate(epoch)) & (positions > 0) & tf.not_equal(gold, self.pad_id)
        mixed = dict(inputs)
        mixed[self.target_key] = tf.where(swap, shifted, gold)
        return mixed
