"""Warmup learning-rate schedules: the Transformer's "Noam" schedule and warmup + cosine."""
import math

import tensorflow as tf

from attnlab.validation import check_non_negative_int, check_number, check_positive_int


@tf.keras.utils.register_keras_serializable(package="attnlab")
class NoamSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):
    """lr = scale * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5) (Vaswani et al. 2017).

    Linear warmup for `warmup_steps` steps, then decay with the inverse square root of the
    step. `step` counts from 1 so the first update has a non-zero rate.

    Args:
        d_model: model width D.
        warmup_steps: steps of linear warmup (> 0).
        scale: multiplier of the whole schedule (1.0 in the paper).

    Returns:
        A schedule: `schedule(step)` is a float32 scalar.

    Example:
        >>> opt = tf.keras.optimizers.Adam(NoamSchedule(64, 400), beta_2=0.98, epsilon=1e-9)
    """

    def __init__(self, d_model, warmup_steps=4000, scale=1.0):
        super().__init__()
        self.d_model = check_positive_int("d_model", d_model)
        self.warmup_steps = check_positive_int("warmup_steps", warmup_steps)
        self.scale = float(check_number("scale", scale, above=0))

    def __call__(self, step):
        step = tf.cast(step, tf.float32) + 1.0
        warmup = float(self.warmup_steps)
        return (self.scale * self.d_model ** -0.5) * tf.minimum(
            tf.math.rsqrt(step), step * warmup ** -1.5)

    def get_config(self):
        return {"d_model": self.d_model, "warmup_steps": self.warmup_steps, "scale": self.scale}


@tf.keras.utils.register_keras_serializable(package="attnlab")
class WarmupCosine(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak_learning_rate`, then cosine decay to `min_learning_rate`.

    Args:
        peak_learning_rate: rate reached at the end of the warmup.
        warmup_steps: steps of linear warmup (>= 0).
        decay_steps: steps of cosine decay after the warmup (> 0); the rate then stays at
            `min_learning_rate`.
        min_learning_rate: final rate.

    Returns:
        A schedule: `schedule(step)` is a float32 scalar.

    Example:
        >>> WarmupCosine(1e-3, warmup_steps=100, decay_steps=900)(100).numpy()
        0.001
    """

    def __init__(self, peak_learning_rate, warmup_steps, decay_steps, min_learning_rate=0.0):
        super().__init__()
        self.peak_learning_rate = float(check_number("peak_learning_rate", peak_learning_rate,
                                                     above=0))
        self.warmup_steps = check_non_negative_int("warmup_steps", warmup_steps)
        self.decay_steps = check_positive_int("decay_steps", decay_steps)
        self.min_learning_rate = float(check_number("min_learning_rate", min_learning_rate,
                                                    at_least=0))
        if self.min_learning_rate > self.peak_learning_rate:
            raise ValueError("min_learning_rate (%r) must be <= peak_learning_rate (%r)"
                             % (min_learning_rate, peak_learning_rate))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        peak, low = self.peak_learning_rate, self.min_learning_rate
        warm = peak * step / float(max(self.warmup_steps, 1))
        progress = tf.clip_by_value((step - self.warmup_steps) / float(self.decay_steps), 0., 1.)
        cosine = low + 0.5 * (peak - low) * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup_steps, warm, cosine)

    def get_config(self):
        return {"peak_learning_rate": self.peak_learning_rate, "warmup_steps": self.warmup_steps,
                "decay_steps": self.decay_steps, "min_learning_rate": self.min_learning_rate}
