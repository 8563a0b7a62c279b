"""A mixture-of-experts feed-forward layer: a learned router sends each token to its top-k
experts (Switch Transformer, Fedus et al. 2021, for k=1; GShard, Lepikhin et al. 2020, for
k=2), with an optional expert capacity and the Switch load-balancing loss."""
import math

import tensorflow as tf

from attnlab.layers.layer_helpers import (
    check_depth,
    clone_initializer,
    finite_number,
    without_keras_mask,
)
from attnlab.ops.checks import as_bool_mask
from attnlab.validation import (
    check_choice,
    check_floating,
    check_positive_int,
    shape_str,
)

DISPATCH_MODES = ("gather", "buffer")


def check_mixture_arguments(num_experts, top_k, capacity_factor, load_balance_loss_weight,
                            router_z_loss_weight, dispatch, prefix=""):
    """Validate the routing arguments; the Transformer blocks name all but num_experts with
    `prefix` ("expert_top_k"). Returns capacity_factor (or None) and the loss weights as
    floats."""
    check_positive_int("num_experts", num_experts)
    check_positive_int(prefix + "top_k", top_k)
    if top_k > num_experts:
        raise ValueError("%stop_k must be at most num_experts=%d, got %d"
                         % (prefix, num_experts, top_k))
    if capacity_factor is not None:
        capacity_factor = float(finite_number(prefix + "capacity_factor", capacity_factor,
                                             above=0))
    load_balance_loss_weight = float(finite_number(
        prefix + "load_balance_loss_weight", load_balance_loss_weight, at_least=0))
    router_z_loss_weight = float(finite_number(
        prefix + "router_z_loss_weight", router_z_loss_weight, at_least=0))
    check_choice(prefix + "dispatch", dispatch, DISPATCH_MODES)
    return capacity_factor, load_balance_loss_weight, router_z_loss_weight


def expert_capacity(capacity_factor, num_tokens, top_k, num_experts):
    """ceil(capacity_factor * tokens * top_k / num_experts), as int32 (None = unlimited).

    Computed in float64, as Python would, so that a product landing on an integer is not
    rounded up by float32 error.
    """
    if capacity_factor is None:
        return None
    static = tf.get_static_value(num_tokens)
    if static is not None:
        return tf.constant(int(math.ceil(capacity_factor * int(static) * top_k / num_experts)),
                           tf.int32)
    demand = capacity_factor * tf.cast(num_tokens, tf.float64) * top_k / num_experts
    return tf.cast(tf.math.ceil(demand), tf.int32)


@tf.keras.utils.register_keras_serializable(package="attnlab")
class MixtureOfExperts(tf.keras.layers.Layer):
    """A top-k routed mixture of feed-forward experts, with capacity and auxiliary losses.

    Each of the E experts is a two-layer feed-forward network
    FFN_e(x) = activation(x W1_e + b1_e) W2_e + b2_e, with W1_e (D, H) and W2_e (H, D). A
    router without bias gives p = softmax(x W_r), W_r (D, E), computed in float32 even under
    `mixed_float16` (small logit differences decide the routing). Each token x goes to the
    experts of its top_k probabilities and

        output = sum over its kept choices e of gate_e * FFN_e(x).

    Gates: with top_k=1 the gate is the router probability p_e itself (Switch), so the
    router gets a gradient through it; with top_k > 1 the k chosen probabilities are
    renormalized to sum to 1 (GShard), so the output scale does not depend on how much
    probability the unchosen experts took.

    Capacity: with `capacity_factor` set, each expert takes at most
    C = ceil(capacity_factor * N * top_k / E) assignments per call, N = B * T the positions
    in the batch (padding included, so C depends on the batch's shape, not its content).
    Assignments are served in priority order: every token's first choice before any second
    choice, and within one choice in token order (batch-major). An assignment over
    capacity is dropped: that expert contributes zero for that token; a token dropped by
    all its choices gets a zero output, which in a residual block (TransformerEncoderBlock
    with `num_experts`) means it passes through unchanged. The share of dropped
    assignments is returned in the routing and, when a capacity is set, reported as a mean
    metric named by the attribute `metric_name`, "<layer name>_dropped_fraction" (the
    Transformer blocks set "<block name>_dropped_fraction": Keras merges metrics of one
    name, and every block's sublayer has the same name).

    Auxiliary losses (`add_loss`, over the non-padding tokens):
    load balance  = load_balance_loss_weight * E * sum_i f_i * P_i, with f_i the fraction
    of tokens whose top-1 choice is expert i (before capacity) and P_i the mean router
    probability of expert i; router z-loss = router_z_loss_weight * mean(logsumexp(logits)^2).
    A loss whose weight is 0 is not added.

    Padding tokens (the Keras mask, or `mask=`) are not routed, take no capacity, give zero
    output and are left out of both losses and of the routing statistics.

    Dispatch: only the routed (token, expert) pairs are computed, never every expert on
    every token. "gather" (default) partitions the kept assignments by expert and runs one
    matmul per expert on exactly its rows; "buffer" scatters them into an (E, C, D) buffer
    (C = the capacity, or the largest expert load when unlimited) and runs one batched
    einsum, computing the buffer's empty slots too. Both give the same outputs; see
    benchmarks/RESULTS.md for their speed.

    Args:
        num_experts: number of experts E (>= 1).
        intermediate_dim: hidden width H of each expert.
        top_k: experts per token, 1 <= top_k <= num_experts.
        capacity_factor: None (unlimited) or a number > 0 scaling the expert capacity.
        activation: activation of the experts' hidden layer (name or callable).
        load_balance_loss_weight: coefficient of the Switch load-balancing loss (>= 0).
        router_z_loss_weight: coefficient of the router z-loss (>= 0).
        dispatch: "gather" or "buffer", how assignments reach the experts (see above).
        kernel_initializer: initializer of the router and expert kernels.
        bias_initializer: initializer of the expert biases.
        kernel_regularizer: optional regularizer of the router and expert kernels.
        bias_regularizer: optional regularizer of the expert biases.
        **kwargs: base Layer arguments.

    Call arguments:
        inputs: (B, T, D).
        mask: (B, T) padding mask, True = real token (passed automatically by Keras).
        return_routing: also return the routing dict.
        training: unused (no dropout inside the layer); accepted for Keras.

    Returns:
        (B, T, D) in the compute dtype; with `return_routing`, `(outputs, routing)` where
        routing is a dict of "expert_index" (B, T, top_k) int32 (-1 for padding),
        "router_probs" (B, T, E) float32, "gates" (B, T, top_k) float32 (0 for padding),
        "dropped" (B, T, top_k) bool (True where the assignment was over capacity),
        "expert_load" (E,) float32, the share of the non-padding assignments each expert
        was chosen for (before capacity; sums to 1), and "dropped_fraction" () float32,
        the share of those assignments dropped. The padding mask is passed on.

    Example:
        >>> moe = MixtureOfExperts(num_experts=4, intermediate_dim=32, top_k=2,
        ...                        capacity_factor=1.25)
        >>> outputs, routing = moe(tf.random.normal([2, 5, 8]), return_routing=True)
        >>> outputs.shape, routing["expert_index"].shape
        (TensorShape([2, 5, 8]), TensorShape([2, 5, 2]))
    """

    def __init__(self, num_experts, intermediate_dim, top_k=1, capacity_factor=None,
                 activation="relu", load_balance_loss_weight=0.01, router_z_loss_weight=0.0,
                 dispatch="gather", kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 **kwargs):
        super().__init__(**kwargs)
        (self.capacity_factor, self.load_balance_loss_weight,
         self.router_z_loss_weight) = check_mixture_arguments(
            num_experts, top_k, capacity_factor, load_balance_loss_weight,
            router_z_loss_weight, dispatch)
        self.num_experts = num_experts
        self.intermediate_dim = check_positive_int("intermediate_dim", intermediate_dim)
        self.top_k = top_k
        self.dispatch = dispatch
        try:
            self.activation = tf.keras.activations.get(activation)
        except ValueError as error:
            raise ValueError("activation %r is not a Keras activation: %s"
                             % (activation, error)) from None
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.bias_initializer = tf.keras.initializers.get(bias_initializer)
        self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = tf.keras.regularizers.get(bias_regularizer)
        self.metric_name = self.name + "_dropped_fraction"
        self.supports_masking = True

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 3 or input_shape[-1] is None:
            raise ValueError("MixtureOfExperts expects inputs of shape (B, T, D) with a known "
                             "D, got %s" % (tuple(input_shape.as_list())
                                            if input_shape.rank is not None
                                            else "(unknown rank)",))
        depth = input_shape[-1]
        experts, hidden = self.num_experts, self.intermediate_dim

        def weight(name, shape, kernel, **kwargs):
            return self.add_weight(
                name, shape=shape, trainable=True,
                initializer=clone_initializer(self.kernel_initializer if kernel
                                              else self.bias_initializer),
                regularizer=self.kernel_regularizer if kernel else self.bias_regularizer,
                **kwargs)

        # The router's variable is read as float32 inside call even under mixed_float16
        # (no autocast), so that the logits are not rounded to float16 before the softmax.
        self.router_kernel = weight("router_kernel", (depth, experts), True,
                                    experimental_autocast=False)
        self.expert_intermediate_kernel = weight("expert_intermediate_kernel",
                                                 (experts, depth, hidden), True)
        self.expert_intermediate_bias = weight("expert_intermediate_bias",
                                               (experts, hidden), False)
        self.expert_output_kernel = weight("expert_output_kernel", (experts, hidden, depth),
                                           True)
        self.expert_output_bias = weight("expert_output_bias", (experts, depth), False)
        super().build(input_shape)

    # ------------------------------------------------------------------------- routing

    def route(self, tokens, valid):
        """Router probabilities and the top-k choices of (N, D) tokens.

        Returns:
            (logits (N, E) float32, probs (N, E) float32, expert_index (N, k) int32,
            gates (N, k) float32).
        """
        logits = tf.matmul(tf.cast(tokens, tf.float32), self.router_kernel)
        probs = tf.nn.softmax(logits, axis=-1)
        top_probs, expert_index = tf.math.top_k(probs, k=self.top_k)
        gates = top_probs
        if self.top_k > 1:
            gates = top_probs / tf.reduce_sum(top_probs, axis=-1, keepdims=True)
        gates = gates * tf.cast(valid, tf.float32)[:, tf.newaxis]
        return logits, probs, tf.cast(expert_index, tf.int32), gates

    def expert_feedforward(self, expert_inputs, weights):
        """One expert's FFN on its rows: (n, D) -> (n, D); `weights` = (W1, b1, W2, b2).

        The "gather" dispatch calls it once per expert with only that expert's tokens.
        """
        kernel1, bias1, kernel2, bias2 = weights
        hidden = self.activation(tf.matmul(expert_inputs, kernel1) + bias1)
        return tf.matmul(hidden, kernel2) + bias2

    def batched_expert_feedforward(self, buffer):
        """Every expert's FFN on its slots of an (E, C, D) buffer -> (E, C, D)."""
        hidden = tf.einsum("ecd,edh->ech", buffer, self.expert_intermediate_kernel) + \
            self.expert_intermediate_bias[:, tf.newaxis, :]
        hidden = self.activation(hidden)
        return tf.einsum("ech,ehd->ecd", hidden, self.expert_output_kernel) + \
            self.expert_output_bias[:, tf.newaxis, :]

    def _dispatch_gather(self, tokens, assign_token, assign_expert, assign_gate, kept,
                         num_tokens):
        experts = self.num_experts
        # Dropped and padding assignments go to an extra partition that is never computed.
        partition = tf.where(kept, assign_expert, experts)
        token_parts = tf.dynamic_partition(assign_token, partition, experts + 1)
        gate_parts = tf.dynamic_partition(assign_gate, partition, experts + 1)
        # One unstack per weight (not E slices): its gradient is one stack, not E dense
        # zero-padded copies of the whole variable.
        per_expert = list(zip(*(tf.unstack(w) for w in (
            self.expert_intermediate_kernel, self.expert_intermediate_bias,
            self.expert_output_kernel, self.expert_output_bias))))
        outputs = []
        for expert in range(experts):
            expert_out = self.expert_feedforward(tf.gather(tokens, token_parts[expert]),
                                                 per_expert[expert])
            outputs.append(expert_out * tf.cast(gate_parts[expert], tokens.dtype)[:, None])
        return tf.math.unsorted_segment_sum(tf.concat(outputs, axis=0),
                                            tf.concat(token_parts[:experts], axis=0),
                                            num_tokens)

    def _dispatch_buffer(self, tokens, assign_token, assign_expert, assign_gate, kept,
                         position, capacity, num_tokens):
        kept_index = tf.where(kept)[:, 0]
        kept_token = tf.gather(assign_token, kept_index)
        kept_expert = tf.gather(assign_expert, kept_index)
        kept_position = tf.gather(position, kept_index)
        if capacity is None:
            # Unlimited: the buffer is as deep as the busiest expert's load.
            capacity = tf.reduce_max(tf.concat([kept_position, [-1]], axis=0)) + 1
        slot = kept_expert * capacity + kept_position
        depth = tokens.shape[-1]
        buffer = tf.scatter_nd(slot[:, tf.newaxis], tf.gather(tokens, kept_token),
                               tf.stack([self.num_experts * capacity, depth]))
        buffer = tf.reshape(buffer, [self.num_experts, capacity, depth])
        expert_out = tf.reshape(self.batched_expert_feedforward(buffer), [-1, depth])
        gate = tf.cast(tf.gather(assign_gate, kept_index), tokens.dtype)[:, tf.newaxis]
        return tf.math.unsorted_segment_sum(tf.gather(expert_out, slot) * gate, kept_token,
                                            num_tokens)

    # ---------------------------------------------------------------------------- call

    def call(self, inputs, mask=None, return_routing=False, training=None):
        inputs = tf.convert_to_tensor(inputs)
        check_floating("inputs", inputs)
        if inputs.shape.rank != 3:
            raise ValueError("MixtureOfExperts expects inputs of shape (B, T, D), got %s"
                             % shape_str(inputs))
        x = tf.cast(without_keras_mask(inputs), self.compute_dtype)
        depth = self.router_kernel.shape[0]
        x = check_depth("MixtureOfExperts", "inputs", x, depth)
        batch, length = tf.shape(x)[0], tf.shape(x)[1]
        experts, k = self.num_experts, self.top_k
        tokens = tf.reshape(x, [-1, depth])
        num_tokens = tf.shape(tokens)[0]
        if mask is None:
            valid = tf.ones([num_tokens], tf.bool)
        else:
            mask = tf.convert_to_tensor(mask)
            if mask.shape.rank != 2 or not mask.shape.is_compatible_with(inputs.shape[:2]):
                raise ValueError("MixtureOfExperts expects a (B, T) padding mask, got %s for "
                                 "inputs %s" % (shape_str(mask), shape_str(inputs)))
            valid = tf.reshape(as_bool_mask(mask, "MixtureOfExperts mask"), [-1])

        logits, probs, expert_index, gates = self.route(tokens, valid)

        # Assignments in priority order: all first choices (token order), then all second.
        assign_expert = tf.reshape(tf.transpose(expert_index), [-1])
        assign_token = tf.tile(tf.range(num_tokens), [k])
        assign_gate = tf.reshape(tf.transpose(gates), [-1])
        assign_valid = tf.tile(valid, [k])
        choice = tf.one_hot(assign_expert, experts, dtype=tf.int32) * \
            tf.cast(assign_valid, tf.int32)[:, tf.newaxis]
        # Position of each assignment in its expert's queue (-1 for padding).
        position = tf.reduce_sum(tf.cumsum(choice, axis=0) * choice, axis=-1) - 1
        capacity = expert_capacity(self.capacity_factor, num_tokens, k, experts)
        kept = assign_valid if capacity is None else assign_valid & (position < capacity)

        if self.dispatch == "gather":
            combined = self._dispatch_gather(tokens, assign_token, assign_expert, assign_gate,
                                             kept, num_tokens)
        else:
            combined = self._dispatch_buffer(tokens, assign_token, assign_expert, assign_gate,
                                             kept, position, capacity, num_tokens)
        outputs = tf.reshape(combined, [batch, length, depth])

        validf = tf.cast(valid, tf.float32)
        real_tokens = tf.maximum(tf.reduce_sum(validf), 1.0)
        real_assignments = tf.reduce_sum(tf.cast(assign_valid, tf.float32))
        dropped_fraction = (real_assignments - tf.reduce_sum(tf.cast(kept, tf.float32))) / \
            tf.maximum(real_assignments, 1.0)
        if self.load_balance_loss_weight > 0:
            top1 = tf.one_hot(expert_index[:, 0], experts) * validf[:, tf.newaxis]
            fraction = tf.reduce_sum(top1, axis=0) / real_tokens
            mean_prob = tf.reduce_sum(probs * validf[:, tf.newaxis], axis=0) / real_tokens
            self.add_loss(self.load_balance_loss_weight * experts
                          * tf.reduce_sum(fraction * mean_prob))
        if self.router_z_loss_weight > 0:
            z = tf.reduce_logsumexp(logits, axis=-1)
            self.add_loss(self.router_z_loss_weight
                          * tf.reduce_sum(tf.square(z) * validf) / real_tokens)
        if self.capacity_factor is not None:
            self.add_metric(dropped_fraction, name=self.metric_name)
        if not return_routing:
            return outputs

        def per_token(t, last):
            return tf.reshape(t, [batch, length, last])

        def per_assignment(t):  # (k * N,) in priority order -> (B, T, k)
            return per_token(tf.transpose(tf.reshape(t, [k, num_tokens])), k)

        expert_load = tf.reduce_sum(tf.cast(choice, tf.float32), axis=0) / \
            tf.maximum(real_assignments, 1.0)
        routing = {
            "expert_index": per_token(tf.where(valid[:, tf.newaxis], expert_index, -1), k),
            "router_probs": per_token(probs, experts),
            "gates": per_token(gates, k),
            "dropped": per_assignment(assign_valid & tf.logical_not(kept)),
            "expert_load": expert_load,
            "dropped_fraction": dropped_fraction,
        }
        return outputs, routing

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_experts": self.num_experts,
            "intermediate_dim": self.intermediate_dim,
            "top_k": self.top_k,
            "capacity_factor": self.capacity_factor,
            "activation": tf.keras.activations.serialize(self.activation),
            "load_balance_loss_weight": self.load_balance_loss_weight,
            "router_z_loss_weight": self.router_z_loss_weight,
            "dispatch": self.dispatch,
            "kernel_initializer": tf.keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": tf.keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": tf.keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": tf.keras.regularizers.serialize(self.bias_regularizer),
        })
        return config
