"""Pure attention functions on tensors: no variables, no files.

The attention functions use TensorFlow control flow explicitly (tf.while_loop, tf.cond)
and are marked `tf.autograph.experimental.do_not_convert`: inside a user's tf.function,
AutoGraph would otherwise rewrite their source and every helper they call, which adds
nothing but tracing time and memory (benchmarks/RESULTS.md, target 2).

Bad arguments are refused before any computation, with an error naming the argument: masks
that are neither bool nor 0/1 (an additive -1e9/-inf mask is a score bias: `bias=`), NaN or
infinite `scale`, negative or non-integer lengths, windows, chunk sizes and offsets. A mask
whose values are known only when the graph runs is checked there by one assert at the op's
boundary; bool masks cost no op.

NaN and Inf *in the inputs' values* pass through, as in TensorFlow: checking every tensor
would cost a pass over it. Checked mode, ATTNLAB_CHECK_NUMERICS=1 in the environment (read
when an op is called or traced), wraps the inputs of the public ops (query, key, value,
bias; scores of `masked_softmax`) in `tf.debugging.check_numerics`, whose error names the
op and the tensor (e.g. "scaled_dot_product_attention: query"). Off by default: then no op
is added.
"""
from attnlab.ops.chunked import chunked_attention
from attnlab.ops.full import full_attention
from attnlab.ops.kernels import KERNELS, attention_kernel, default_attention_impl
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
    "KERNELS",
    "attention_kernel",
    "align_mask",
    "band_mask",
    "causal_mask",
    "chunked_attention",
    "combine_masks",
    "default_attention_impl",
    "full_attention",
    "local_attention",
    "mask_value",
    "masked_softmax",
    "padding_mask",
    "scaled_dot_product_attention",
]
