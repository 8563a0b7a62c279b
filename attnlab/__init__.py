"""attnlab: custom attention mechanisms for TensorFlow 2 / Keras 2.

Subpackages:
    attnlab.ops     pure tensor functions (scaled dot-product, masks, chunked, local)
    attnlab.layers  Keras layers built on the ops
"""
__version__ = "0.1.0"
