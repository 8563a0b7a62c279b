"""Fixtures shared by the attention op tests."""
import pytest

from attnlab.ops import chunked, scaled_dot_product, softmax_kernel


@pytest.fixture(scope="module", params=softmax_kernel.CHOICES)
def normalization(request):
    """Runs a test with each way full and chunked attention normalize their weights: the one
    this TensorFlow's probe picks (`softmax_kernel`) and the other one. Module-scoped (one
    patch per module and choice), so that property tests can use it too."""
    with pytest.MonkeyPatch.context() as patch:
        for module in (scaled_dot_product, chunked):
            patch.setattr(module, "attention_normalization", lambda: request.param)
        # The tests' small score matrices take the exp path too.
        patch.setattr(scaled_dot_product, "EXP_MIN_SCORES", 0)
        yield request.param
