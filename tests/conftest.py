"""Shared pytest configuration: quiet TensorFlow, deterministic seeds, clean Keras state."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from hypothesis import settings  # noqa: E402

# TensorFlow traces functions on first use; the first example of a property test is slow.
settings.register_profile("attnlab", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("attnlab")


@pytest.fixture(autouse=True)
def clean_keras_state():
    """Each test starts with seed 0, the float32 policy and a fresh Keras session."""
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    tf.keras.mixed_precision.set_global_policy("float32")
    yield
    tf.keras.mixed_precision.set_global_policy("float32")
