"""Every layer refuses bad constructor arguments and inputs that do not fit its built weights
with our error naming the argument (never a raw TensorFlow kernel error)."""
import pytest
import tensorflow as tf

from attnlab import layers as L

NAN, INF = float("nan"), float("inf")

# (layer class, constructor kwargs, exception, message naming the argument)
CONSTRUCTORS = [
    (L.AdditiveAttention, {"units": 0}, ValueError, "units must be a positive integer, got 0"),
    (L.AdditiveAttention, {"units": NAN}, ValueError, "units must be a positive integer, got nan"),
    (L.AdditiveAttention, {"units": "4"}, ValueError, "units must be a positive integer, got '4'"),
    (L.LuongAttention, {"score": "cosine"}, ValueError, "score must be one of dot, general"),
    (L.LuongAttention, {"score": "dot", "units": 4}, ValueError, "units is only used by"),
    (L.LuongAttention, {"score": "concat", "units": 0}, ValueError,
     "units must be a positive integer, got 0"),
    (L.SqueezeExcitation, {"ratio": 0}, ValueError, "ratio must be a positive integer, got 0"),
    (L.SqueezeExcitation, {"ratio": NAN}, ValueError, "ratio must be a positive integer, got nan"),
    (L.SqueezeExcitation, {"ratio": 2.5}, ValueError, "ratio must be a positive integer, got 2.5"),
    (L.ChannelAttention, {"ratio": -1}, ValueError, "ratio must be a positive integer, got -1"),
    (L.CBAM, {"ratio": NAN}, ValueError, "ratio must be a positive integer, got nan"),
    (L.CBAM, {"kernel_size": 4}, ValueError, "kernel_size must be an odd positive integer"),
    (L.CBAM, {"return_attention": 1}, TypeError, "return_attention must be a bool, got 1"),
    (L.SpatialAttention, {"kernel_size": 0}, ValueError, "kernel_size must be an odd positive"),
    (L.SpatialAttention, {"kernel_size": NAN}, ValueError, "kernel_size must be .*got nan"),
    (L.SpatialAttention, {"kernel_size": 3.0}, ValueError, "kernel_size must be .*got 3.0"),
    (L.SpatialAttention, {"return_attention": "yes"}, TypeError,
     "return_attention must be a bool, got 'yes'"),
    (L.LearnedPositionEmbedding, {"max_length": 0}, ValueError,
     "max_length must be a positive integer, got 0"),
    (L.LearnedPositionEmbedding, {"max_length": NAN}, ValueError,
     "max_length must be a positive integer, got nan"),
    (L.SinusoidalPositionEncoding, {"max_length": -2}, ValueError,
     "max_length must be a positive integer, got -2"),
    (L.SinusoidalPositionEncoding, {"base": NAN}, ValueError, "base must be a number > 1, got nan"),
    (L.SinusoidalPositionEncoding, {"base": INF}, ValueError, "base must be a finite number"),
    (L.SinusoidalPositionEncoding, {"base": 1}, ValueError, "base must be a number > 1, got 1"),
    (L.RotaryEmbedding, {"max_wavelength": NAN}, ValueError, "max_wavelength must be a number"),
    (L.RotaryEmbedding, {"max_wavelength": INF}, ValueError,
     "max_wavelength must be a finite number, got inf"),
    (L.RotaryEmbedding, {"scaling_factor": 0}, ValueError, "scaling_factor must be a number > 0"),
    (L.RotaryEmbedding, {"scaling_factor": NAN}, ValueError, "scaling_factor must be .*got nan"),
    (L.RotaryEmbedding, {"scaling_factor": INF}, ValueError, "scaling_factor must be a finite"),
    (L.RelativePositionBias, {"num_heads": 0}, ValueError, "num_heads must be a positive integer"),
    (L.RelativePositionBias, {"num_heads": 2, "num_buckets": 0}, ValueError,
     "num_buckets must be a positive integer, got 0"),
    (L.RelativePositionBias, {"num_heads": 2, "max_distance": NAN}, ValueError,
     "max_distance must be a positive integer, got nan"),
    (L.CustomAttention, {"head_size": 0}, ValueError, "head_size must be a positive integer"),
    (L.CustomAttention, {"head_size": 4, "return_weights": 1}, TypeError,
     "return_weights must be a bool, got 1"),
    (L.GatedAttention, {"num_heads": 2, "key_dim": 4, "dropout": NAN}, ValueError,
     r"dropout must be in \[0, 1\), got nan"),
    (L.GatedAttention, {"num_heads": 2, "key_dim": 4, "dropout": 1.0}, ValueError,
     r"dropout must be in \[0, 1\), got 1.0"),
    (L.GatedAttention, {"num_heads": 2, "key_dim": 4, "dropout": "0.1"}, ValueError,
     r"dropout must be in \[0, 1\), got '0.1'"),
    (L.MultiHeadAttention, {"num_heads": 2, "key_dim": 4, "dropout": -0.1}, ValueError,
     r"dropout must be in \[0, 1\), got -0.1"),
    (L.MultiHeadAttention, {"num_heads": 2, "key_dim": 4, "dropout": INF}, ValueError,
     r"dropout must be in \[0, 1\), got inf"),
    (L.TransformerEncoderBlock, {"num_heads": 2, "intermediate_dim": 8, "dropout": NAN},
     ValueError, r"dropout must be in \[0, 1\), got nan"),
    (L.TransformerEncoderBlock, {"num_heads": 2, "intermediate_dim": 8,
                                 "layer_norm_epsilon": NAN}, ValueError,
     "layer_norm_epsilon must be a positive finite number, got nan"),
    (L.TransformerEncoderBlock, {"num_heads": 2, "intermediate_dim": 8,
                                 "layer_norm_epsilon": INF}, ValueError,
     "layer_norm_epsilon must be a positive finite number, got inf"),
    (L.TransformerEncoderBlock, {"num_heads": 0, "intermediate_dim": 8}, ValueError,
     "num_heads must be a positive integer, got 0"),
    (L.TransformerDecoderBlock, {"num_heads": 2, "intermediate_dim": 8, "dropout": True},
     ValueError, r"dropout must be in \[0, 1\), got True"),
    (L.TransformerDecoderBlock, {"num_heads": 2, "intermediate_dim": 0}, ValueError,
     "intermediate_dim must be a positive integer, got 0"),
    (L.NonLocalBlock, {"downsample": 0}, ValueError, "downsample must be a positive integer"),
    (L.NonLocalBlock, {"inner_channels": 0}, ValueError, "inner_channels must be"),
    (L.NonLocalBlock, {"scaled": 1}, TypeError, "scaled must be a bool, got 1"),
    (L.AttentionPooling, {"units": -2}, ValueError, "units must be a positive integer, got -2"),
    (L.MixtureOfExperts, {"num_experts": 0, "intermediate_dim": 8}, ValueError,
     "num_experts must be a positive integer, got 0"),
    (L.MixtureOfExperts, {"num_experts": 2, "intermediate_dim": 8, "top_k": 3}, ValueError,
     "top_k must be at most num_experts=2, got 3"),
    (L.MixtureOfExperts, {"num_experts": 2, "intermediate_dim": 8, "capacity_factor": NAN},
     ValueError, "capacity_factor must be a number > 0, got nan"),
    (L.MixtureOfExperts, {"num_experts": 2, "intermediate_dim": 8, "capacity_factor": INF},
     ValueError, "capacity_factor must be a finite number, got inf"),
    (L.MixtureOfExperts, {"num_experts": 2, "intermediate_dim": 8,
                          "load_balance_loss_weight": NAN}, ValueError,
     "load_balance_loss_weight must be a number >= 0, got nan"),
    (L.AdaptiveSpanAttention, {"num_heads": 2, "key_dim": 4, "max_span": 0}, ValueError,
     "max_span must be a positive integer, got 0"),
    (L.AdaptiveSpanAttention, {"num_heads": 2, "key_dim": 4, "max_span": 8, "ramp": NAN},
     ValueError, "ramp must be a number > 0, got nan"),
    (L.AdaptiveSpanAttention, {"num_heads": 2, "key_dim": 4, "max_span": 8, "ramp": INF},
     ValueError, "ramp must be a finite number, got inf"),
    (L.AdaptiveSpanAttention, {"num_heads": 2, "key_dim": 4, "max_span": 8, "span_init": NAN},
     ValueError, r"span_init must be a number in \[0, 1\], got nan"),
    (L.AdaptiveSpanAttention, {"num_heads": 2, "key_dim": 4, "max_span": 8,
                               "span_penalty": INF}, ValueError,
     "span_penalty must be a finite number, got inf"),
]


@pytest.mark.parametrize("cls,kwargs,error,message", CONSTRUCTORS,
                         ids=["%s-%s" % (c[0].__name__, "-".join("%s=%r" % kv for kv in
                                                                 c[1].items()))
                              for c in CONSTRUCTORS])
def test_constructor_refuses_bad_arguments(cls, kwargs, error, message):
    with pytest.raises(error, match=message):
        cls(**kwargs)


def n(*shape):
    return tf.random.normal(shape)


_BUILT = {}


def built(key):
    """Layers built once on a first good call and shared by the call cases."""
    if key not in _BUILT:
        factories = {
            "additive": lambda: _call(L.AdditiveAttention(4), n(2, 3, 4), n(2, 5, 6)),
            "general": lambda: _call(L.LuongAttention("general"), n(2, 3, 4), n(2, 5, 6)),
            "concat": lambda: _call(L.LuongAttention("concat"), n(2, 3, 4), n(2, 5, 6)),
            "dot": lambda: L.LuongAttention("dot"),
            "se": lambda: _call(L.SqueezeExcitation(4), n(1, 4, 4, 8)),
            "channel": lambda: _call(L.ChannelAttention(4), n(1, 4, 4, 8)),
            "cbam": lambda: _call(L.CBAM(4, 3), n(1, 4, 4, 8)),
            "spatial": lambda: _call(L.SpatialAttention(3), n(1, 4, 4, 8)),
            "learned": lambda: _call(L.LearnedPositionEmbedding(8), n(1, 4, 8)),
            "custom": lambda: _call(L.CustomAttention(4), n(1, 4, 8)),
            "gated": lambda: _call(L.GatedAttention(2, 4), n(1, 4, 8)),
            "mha": lambda: _call(L.MultiHeadAttention(2, 4), n(1, 4, 8), n(1, 4, 8)),
            "encoder": lambda: _call(L.TransformerEncoderBlock(2, 8), n(1, 4, 8)),
            "decoder": lambda: _call(L.TransformerDecoderBlock(2, 8), n(1, 4, 8), n(1, 3, 8)),
            "nonlocal": lambda: _call(L.NonLocalBlock(), n(1, 4, 4, 8)),
            "pooling": lambda: _call(L.AttentionPooling(4), n(1, 4, 8)),
            "moe": lambda: _call(L.MixtureOfExperts(2, 8), n(1, 4, 8)),
            "span": lambda: _call(L.AdaptiveSpanAttention(2, 4, 8), n(1, 4, 8), n(1, 4, 8)),
        }
        _BUILT[key] = factories[key]()
    return _BUILT[key]


def _call(layer, *args):
    layer(*args)
    return layer


# (built layer, bad call args, message naming the argument): all ValueError
CALLS = [
    ("additive", (n(2, 3, 5), n(2, 5, 6)),
     r"AdditiveAttention was built for query of depth 4 \(last dimension\), got query of "
     r"shape \(2, 3, 5\)"),
    ("additive", (n(2, 3, 4), n(2, 5, 7)), r"built for values of depth 6.*\(2, 5, 7\)"),
    ("additive", (n(2, 4), n(2, 5, 7)), r"built for values of depth 6"),
    ("additive", (n(2, 3, 4), n(3, 5, 6)),
     r"AdditiveAttention needs query and values of the same batch size, got query of shape "
     r"\(2, 3, 4\) and values of shape \(3, 5, 6\)"),
    ("additive", (n(2, 3, 4), n(5, 6)), r"values \(encoder outputs\) of shape \(B, S, Dv\)"),
    ("general", (n(2, 3, 5), n(2, 5, 6)), r"LuongAttention was built for query of depth 4"),
    ("general", (n(2, 3, 4), n(2, 5, 9)), r"LuongAttention was built for values of depth 6"),
    ("general", (n(2, 3, 4), n(1, 5, 6)), r"query and values of the same batch size"),
    ("concat", (n(2, 3, 5), n(2, 5, 6)),
     r"score='concat'\) was built for query depth \+ values depth = 10, got query depth 5"),
    ("dot", (n(2, 3, 6), n(3, 5, 6)), r"query and values of the same batch size"),
    ("dot", (n(2, 3, 4), n(2, 5, 6)), r"query depth 4 and values depth 6"),
    ("se", (n(1, 4, 4, 16),),
     r"SqueezeExcitation was built for inputs of depth 8 \(last dimension\), got inputs of "
     r"shape \(1, 4, 4, 16\)"),
    ("se", (n(1, 4, 8),), r"SqueezeExcitation expects channels-last images"),
    ("channel", (n(1, 4, 4, 3),), r"ChannelAttention was built for inputs of depth 8"),
    ("cbam", (n(1, 4, 4, 16),), r"CBAM was built for inputs of depth 8"),
    ("spatial", (n(1, 4, 8),), r"SpatialAttention expects channels-last images.*\(1, 4, 8\)"),
    ("learned", (n(1, 4, 16),),
     r"LearnedPositionEmbedding was built for inputs of depth 8.*\(1, 4, 16\)"),
    ("learned", (n(1, 9, 8),), r"sequence length 9 needs 9 positions, more than max_length=8"),
    ("custom", (n(1, 4, 16),), r"CustomAttention was built for inputs of depth 8"),
    ("gated", (n(1, 4, 16),), r"built for query depth 8, got query of shape \(1, 4, 16\)"),
    ("mha", (n(1, 4, 8), n(1, 4, 6)), r"built for value depth 8, got value of shape"),
    ("encoder", (n(1, 4, 16),), r"built for query depth 8, got query of shape \(1, 4, 16\)"),
    ("decoder", (n(1, 4, 8), n(1, 3, 16)), r"built for value depth 8, got value"),
    ("decoder", (n(1, 4, 8), n(2, 3, 8)),
     r"TransformerDecoderBlock needs inputs and encoder_output of the same batch size"),
    ("nonlocal", (n(1, 4, 4, 16),), r"NonLocalBlock was built for inputs of depth 8"),
    ("pooling", (n(1, 4, 16),), r"AttentionPooling was built for inputs of depth 8"),
    ("moe", (n(1, 4, 16),), r"MixtureOfExperts was built for inputs of depth 8"),
    ("span", (n(1, 4, 16), n(1, 4, 16)), r"built for query depth 8"),
]


@pytest.mark.parametrize("key,args,message", CALLS,
                         ids=["%s-%d" % (c[0], i) for i, c in enumerate(CALLS)])
def test_call_refuses_inputs_that_do_not_fit(key, args, message):
    layer = built(key)
    with pytest.raises(ValueError, match=message):
        layer(*args)


@pytest.mark.parametrize("layer,args,message", [
    (lambda: L.RotaryEmbedding(), (n(1, 4, 7),), "RotaryEmbedding needs an even feature depth"),
    (lambda: L.SinusoidalPositionEncoding(max_length=4), (n(1, 8, 8),),
     "sequence length 8 needs 8 positions, more than max_length=4"),
    (lambda: L.AttentionPooling(4), (n(4, 8),), r"AttentionPooling expects inputs of shape"),
    (lambda: L.MixtureOfExperts(2, 8), (n(4, 8),), r"MixtureOfExperts expects inputs of shape"),
    (lambda: L.NonLocalBlock(downsample=2), (n(1, 3, 4, 8),), "height divisible by 2"),
])
def test_call_refuses_bad_shapes_before_building(layer, args, message):
    with pytest.raises(ValueError, match=message):
        layer()(*args)


def test_integer_values_are_a_type_error():
    with pytest.raises(TypeError, match="values must be a floating-point tensor, got dtype int32"):
        built("additive")(n(2, 3, 4), tf.zeros([2, 5, 6], tf.int32))


def test_unknown_depth_is_checked_at_run_time():
    # A graph input without a static depth: the check becomes an assertion, still ours.
    layer = built("additive")
    run = tf.function(lambda q, v: layer(q, v),
                      input_signature=[tf.TensorSpec([None, None, None]),
                                       tf.TensorSpec([None, None, 6])])
    assert run(n(2, 3, 4), n(2, 5, 6)).shape == (2, 3, 6)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"AdditiveAttention was built for query of depth 4"):
        run(n(2, 3, 5), n(2, 5, 6))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="AdditiveAttention needs query and values of the same batch"):
        run(n(2, 3, 4), n(3, 5, 6))


def test_learned_positions_past_max_length_fail_at_run_time_with_our_message():
    layer = built("learned")
    run = tf.function(lambda x: layer(x), input_signature=[tf.TensorSpec([None, None, 8])])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="LearnedPositionEmbedding: start_index \\+ sequence length "
                             "exceeds max_length=8"):
        run(n(1, 9, 8))
