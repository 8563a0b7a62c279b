"""Keras 2 attention layers, one concept per module, registered under package "attnlab"."""
from attnlab.layers.adaptive_span import AdaptiveSpanAttention
from attnlab.layers.additive_attention import AdditiveAttention
from attnlab.layers.attention_pooling import AttentionPooling
from attnlab.layers.cbam import CBAM
from attnlab.layers.channel_attention import ChannelAttention
from attnlab.layers.custom_attention import CustomAttention
from attnlab.layers.gated_attention import GatedAttention
from attnlab.layers.kv_cache import empty_cache, update_cache
from attnlab.layers.luong_attention import LuongAttention
from attnlab.layers.mixture_of_experts import MixtureOfExperts
from attnlab.layers.multi_head_attention import MultiHeadAttention
from attnlab.layers.non_local import NonLocalBlock
from attnlab.layers.positional import (
    LearnedPositionEmbedding,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositionEncoding,
)
from attnlab.layers.spatial_attention import SpatialAttention
from attnlab.layers.squeeze_excitation import SqueezeExcitation
from attnlab.layers.transformer_decoder import TransformerDecoderBlock
from attnlab.layers.transformer_encoder import TransformerEncoderBlock

__all__ = [
    "AdaptiveSpanAttention",
    "AdditiveAttention",
    "AttentionPooling",
    "CBAM",
    "ChannelAttention",
    "CustomAttention",
    "GatedAttention",
    "LearnedPositionEmbedding",
    "LuongAttention",
    "MixtureOfExperts",
    "MultiHeadAttention",
    "NonLocalBlock",
    "RelativePositionBias",
    "RotaryEmbedding",
    "SinusoidalPositionEncoding",
    "SpatialAttention",
    "SqueezeExcitation",
    "TransformerDecoderBlock",
    "TransformerEncoderBlock",
    "empty_cache",
    "update_cache",
]
