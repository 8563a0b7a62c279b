"""Which softmax kernel this TensorFlow runs on the CPU, to choose how attention normalizes.

TensorFlow builds with oneDNN replace `tf.nn.softmax` on the CPU by oneDNN's fused softmax
in some versions (2.15) but not in others: TF 2.9, the workbench image's, runs Eigen's
generic kernel, about 3x slower than a single `tf.exp` over the same (B, H, L, L) scores.
Full and chunked attention therefore normalize through exp and row sums on such a
TensorFlow (`scaled_dot_product.key0_shifted_exp`) and through `tf.nn.softmax` elsewhere.
"""
import functools
import os

import numpy as np
import tensorflow as tf

# "exp" or "softmax" overrides the probe (to compare the two, or to pin one).
OVERRIDE_VARIABLE = "ATTNLAB_ATTENTION_NORMALIZATION"
CHOICES = ("exp", "softmax")


def _softmax_kernel_op():
    """The op TensorFlow runs for a CPU softmax after its graph rewrites (e.g. "Softmax",
    "_MklSoftmax"), read from the partition graph of a one-op session."""
    graph = tf.Graph()
    with graph.as_default():
        scores = tf.compat.v1.placeholder(tf.float32, [1, 2])
        weights = tf.nn.softmax(scores)
    config = tf.compat.v1.ConfigProto(device_count={"GPU": 0}, inter_op_parallelism_threads=1,
                                      intra_op_parallelism_threads=1)
    metadata = tf.compat.v1.RunMetadata()
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        session.run(weights, {scores: np.zeros([1, 2], np.float32)},
                    options=tf.compat.v1.RunOptions(output_partition_graphs=True),
                    run_metadata=metadata)
    ops = {node.op for part in metadata.partition_graphs for node in part.node}
    softmax_ops = sorted(op for op in ops if "Softmax" in op)
    return softmax_ops[0] if softmax_ops else None


@functools.lru_cache(maxsize=None)
def attention_normalization():
    """"exp" where the CPU softmax is TensorFlow's generic kernel, else "softmax".

    "softmax" also when a GPU is visible (its softmax kernels are fused) or when the probe
    fails. The environment variable ATTNLAB_ATTENTION_NORMALIZATION=exp|softmax overrides
    the probe. Decided once per process.

    Example:
        >>> attention_normalization()  # TF 2.9 on a CPU
        'exp'
    """
    override = os.environ.get(OVERRIDE_VARIABLE, "").strip()
    if override:
        if override not in CHOICES:
            raise ValueError("%s must be one of %s, got %r"
                             % (OVERRIDE_VARIABLE, ", ".join(CHOICES), override))
        return override
    if tf.config.list_physical_devices("GPU"):
        return "softmax"
    try:
        op = _softmax_kernel_op()
    except (tf.errors.OpError, RuntimeError, ValueError):
        return "softmax"
    return "exp" if op == "Softmax" else "softmax"
