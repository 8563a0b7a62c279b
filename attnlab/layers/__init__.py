"""Keras 2 attention layers, one concept per module, registered under package "attnlab"."""
from attnlab.layers.additive_attention import AdditiveAttention
from attnlab.layers.cbam import CBAM
from attnlab.layers.channel_attention import ChannelAttention
from attnlab.layers.gated_attention import GatedAttention
from attnlab.layers.luong_attention import LuongAttention
from attnlab.layers.positional import (
    LearnedPositionEmbedding,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositionEncoding,
)
from attnlab.layers.spatial_attention import SpatialAttention
from attnlab.layers.squeeze_excitation import SqueezeExcitation

__all__ = [
    "AdditiveAttention",
    "CBAM",
    "ChannelAttention",
    "GatedAttention",
    "LearnedPositionEmbedding",
    "LuongAttention",
    "RelativePositionBias",
    "RotaryEmbedding",
    "SinusoidalPositionEncoding",
    "SpatialAttention",
    "SqueezeExcitation",
]
