"""Learning-rate schedules against their closed-form NumPy definitions."""
import math

import numpy as np
import pytest
import tensorflow as tf

from attnlab.train.schedules import NoamSchedule, WarmupCosine


def test_noam_matches_the_paper_formula():
    schedule = NoamSchedule(64, warmup_steps=10, scale=2.0)
    for step in [0, 1, 5, 9, 10, 50, 1000]:
        s = step + 1
        expected = 2.0 * 64 ** -0.5 * min(s ** -0.5, s * 10 ** -1.5)
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5)
    rates = [float(schedule(s)) for s in range(30)]
    assert int(np.argmax(rates)) == 9  # peak at the end of the warmup


def test_warmup_cosine_matches_the_formula():
    schedule = WarmupCosine(1e-2, warmup_steps=10, decay_steps=20, min_learning_rate=1e-3)
    for step in [0, 3, 10, 15, 30, 100]:
        if step < 10:
            expected = 1e-2 * step / 10
        else:
            progress = min((step - 10) / 20, 1.0)
            expected = 1e-3 + 0.5 * (1e-2 - 1e-3) * (1 + math.cos(math.pi * progress))
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("schedule", [NoamSchedule(32, 100, 0.5),
                                      WarmupCosine(1e-3, 5, 50, 1e-5)])
def test_serialization_round_trip(schedule):
    config = tf.keras.optimizers.schedules.serialize(schedule)
    clone = tf.keras.optimizers.schedules.deserialize(config)
    assert type(clone) is type(schedule) and clone.get_config() == schedule.get_config()
    for step in (0, 7, 300):
        assert float(clone(step)) == pytest.approx(float(schedule(step)))


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="d_model must be a positive integer, got 0"):
        NoamSchedule(0)
    with pytest.raises(ValueError, match="warmup_steps must be a positive integer, got -3"):
        NoamSchedule(8, -3)
    with pytest.raises(ValueError, match="decay_steps must be a positive integer, got 0"):
        WarmupCosine(1e-3, 10, 0)
    with pytest.raises(ValueError, match=r"min_learning_rate \(0.1\) must be <= "
                                         r"peak_learning_rate \(0.01\)"):
        WarmupCosine(0.01, 10, 100, 0.1)
