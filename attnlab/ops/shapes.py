"""Shape helpers shared by the attention ops."""
import tensorflow as tf

from attnlab.ops.masked_softmax import softmax_dtype
from attnlab.ops.masks import align_mask
from attnlab.ops.score_bias import align_bias
from attnlab.validation import check_query_key_value, shape_str


def static_or_dynamic_length(x, axis):
    """The length of `x` along `axis`: a Python int when known statically, else a scalar
    tensor (so that sizes computed from it stay Python ints whenever they can)."""
    static = x.shape[axis]
    return static if static is not None else tf.shape(x)[axis]


def blockwise_inputs(op_name, query, key, value, mask, bias, bias_in_softmax_dtype):
    """The inputs of a blockwise op (chunked, local) as tensors of known rank, with the mask
    and the bias aligned to the scores' rank, the bias in the dtype the op adds it in (the
    query's, or float32 for half precision with `bias_in_softmax_dtype`); a ValueError names
    `op_name` and what has no known rank."""
    query, key, value = check_query_key_value(query, key, value)
    if query.shape.rank is None or key.shape.rank is None or value.shape.rank is None:
        raise ValueError("%s needs inputs of known rank, got query %s, key %s, value %s"
                         % (op_name, shape_str(query), shape_str(key), shape_str(value)))
    scores_shape = query.shape[:-1].concatenate(key.shape[-2:-1])
    if mask is not None:
        # align_mask refuses values other than 0/1 (an additive mask), once, here at the
        # op's boundary rather than in its loops.
        mask = align_mask(mask, scores_shape)
        if mask.shape.rank is None:
            raise ValueError("%s needs a mask of known rank, got %s" % (op_name, shape_str(mask)))
    if bias is not None:
        dtype = softmax_dtype(query.dtype) if bias_in_softmax_dtype else query.dtype
        bias = align_bias(bias, scores_shape, dtype)
        if bias.shape.rank is None:
            raise ValueError("%s needs a bias of known rank, got %s" % (op_name, shape_str(bias)))
    return query, key, value, mask, bias
