"""Fixtures shared by the attention op tests."""
import pytest

from attnlab.ops.full import NORMALIZATIONS


@pytest.fixture(scope="module", params=NORMALIZATIONS)
def normalization(request):
    """Each way the full and chunked kernels normalize their weights, "softmax" and "exp",
    passed to them explicitly. Module-scoped, so that property tests can use it too."""
    return request.param
