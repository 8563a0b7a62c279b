"""attnlab: custom attention mechanisms for TensorFlow 2 / Keras 2.

Subpackages:
    attnlab.ops     pure tensor functions (scaled dot-product, masks, chunked, local)
    attnlab.layers  Keras layers built on the ops
    attnlab.models  small reference models assembled from the layers
    attnlab.data    deterministic synthetic tasks (no downloads)
    attnlab.train   custom training loop, run folders, `attnlab` command line
    attnlab.viz     heatmaps, attention rollout, capture, AttentionExplorer widget
"""
__version__ = "0.1.0"
