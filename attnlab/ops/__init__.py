"""Pure attention functions on tensors: no variables, no files."""
from attnlab.ops.chunked import chunked_attention
from attnlab.ops.local import local_attention
from attnlab.ops.masked_softmax import mask_value, masked_softmax
from attnlab.ops.masks import (
    align_mask,
    band_mask,
    causal_mask,
    combine_masks,
    padding_mask,
)
from attnlab.ops.scaled_dot_product import scaled_dot_product_attention

__all__ = [
    "align_mask",
    "band_mask",
    "causal_mask",
    "chunked_attention",
    "combine_masks",
    "local_attention",
    "mask_value",
    "masked_softmax",
    "padding_mask",
    "scaled_dot_product_attention",
]
