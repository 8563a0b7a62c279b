import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.layers.positional.rotary import RotaryEmbedding
from tests.layers.layer_checks import check_layer


def reference_rope(x, start=0, max_wavelength=10000.0, scaling_factor=1.0):
    """float64 RoPE as a complex rotation: z_i = x_i + j x_{i+d/2}, z_i *= e^{j theta_i p}."""
    x = np.asarray(x, np.float64)
    half = x.shape[-1] // 2
    positions = (start + np.arange(x.shape[1])) / scaling_factor
    theta = max_wavelength ** (-2.0 * np.arange(half) / x.shape[-1])
    rotation = np.exp(1j * positions[:, None] * theta[None, :])   # (T, d/2)
    if x.ndim == 4:
        rotation = rotation[:, None, :]
    z = (x[..., :half] + 1j * x[..., half:]) * rotation
    return np.concatenate([z.real, z.imag], axis=-1)


@settings(max_examples=10)
@given(rank4=st.booleans(), length=st.integers(1, 5), half=st.integers(1, 4),
       start=st.integers(0, 30), scaling=st.sampled_from([1.0, 2.5]),
       wavelength=st.sampled_from([100, 10000]))
def test_matches_complex_rotation(rank4, length, half, start, scaling, wavelength):
    shape = (2, length, 3, 2 * half) if rank4 else (2, length, 2 * half)
    x = np.random.RandomState(length).normal(size=shape).astype("float32")
    layer = RotaryEmbedding(max_wavelength=wavelength, scaling_factor=scaling)
    got = layer(x, start_index=start).numpy()
    np.testing.assert_allclose(got, reference_rope(x, start, wavelength, scaling), atol=1e-4)


@settings(max_examples=10)
@given(m=st.integers(0, 40), n=st.integers(0, 40), shift=st.integers(1, 60))
def test_scores_depend_only_on_relative_position(m, n, shift):
    rng = np.random.RandomState(0)
    q = rng.normal(size=(1, 1, 8)).astype("float32")
    k = rng.normal(size=(1, 1, 8)).astype("float32")
    layer = RotaryEmbedding()

    def score(qpos, kpos):
        rq = layer(q, start_index=qpos).numpy().astype(np.float64)
        rk = layer(k, start_index=kpos).numpy().astype(np.float64)
        return float(np.sum(rq * rk))

    assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=1e-3)
    # at equal positions the rotations cancel: the score is the plain dot product
    assert score(0, 0) == pytest.approx(float(np.sum(q * k)), abs=1e-5)


def test_rotation_preserves_norm():
    x = np.random.RandomState(1).normal(size=(2, 6, 2, 4)).astype("float32")
    got = RotaryEmbedding()(x, start_index=7).numpy()
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), np.linalg.norm(x, axis=-1),
                               rtol=1e-5)


def test_start_index_equals_row_of_full_rotation():
    x = np.random.RandomState(2).normal(size=(2, 6, 3, 4)).astype("float32")
    layer = RotaryEmbedding()
    full = layer(x).numpy()
    for t in range(6):
        step = layer(x[:, t:t + 1], start_index=t).numpy()
        np.testing.assert_allclose(step[:, 0], full[:, t], atol=1e-6)


def test_check_layer(tmp_path):
    x = np.random.RandomState(0).normal(size=(2, 4, 2, 6)).astype("float32")
    check_layer(RotaryEmbedding, {"max_wavelength": 500, "scaling_factor": 2.0}, x, tmp_path,
                call_kwargs={"start_index": 5}, expected_output_shape=(2, 4, 2, 6))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"even feature depth d .* got d=5"):
        RotaryEmbedding()(tf.zeros([1, 3, 5]))
    with pytest.raises(ValueError, match=r"\(B, T, d\) or \(B, T, H, d\), got shape \(3, 4\)"):
        RotaryEmbedding()(tf.zeros([3, 4]))
    with pytest.raises(ValueError, match=r"start_index must be >= 0, got -2"):
        RotaryEmbedding()(tf.zeros([1, 3, 4]), start_index=-2)
    with pytest.raises(ValueError, match=r"scaling_factor must be a number > 0, got 0"):
        RotaryEmbedding(scaling_factor=0)
    with pytest.raises(ValueError, match=r"max_wavelength must be a number > 1, got 'big'"):
        RotaryEmbedding(max_wavelength="big")
    with pytest.raises(TypeError, match="inputs must be a floating-point tensor, got dtype int32"):
        RotaryEmbedding()(tf.zeros([1, 3, 4], tf.int32))
