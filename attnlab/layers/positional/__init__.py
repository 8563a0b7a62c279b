"""Position information for attention: absolute tables, rotary and relative bias."""
from attnlab.layers.positional.learned import LearnedPositionEmbedding
from attnlab.layers.positional.relative_position_bias import (
    RelativePositionBias,
    relative_position_bucket,
)
from attnlab.layers.positional.rotary import RotaryEmbedding
from attnlab.layers.positional.sinusoidal import SinusoidalPositionEncoding

__all__ = [
    "LearnedPositionEmbedding",
    "RelativePositionBias",
    "RotaryEmbedding",
    "SinusoidalPositionEncoding",
    "relative_position_bucket",
]
