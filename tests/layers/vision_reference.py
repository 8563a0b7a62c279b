"""float64 NumPy references for the channels-last vision attention layers."""
import numpy as np


def w64(layer, name):
    return np.asarray(getattr(layer, name).numpy(), np.float64)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def channel_attention(layer, x):
    """x * sigmoid(MLP(avg) + MLP(max)) with the ChannelAttention layer's weights."""
    x = np.asarray(x, np.float64)

    def mlp(d):
        hidden = np.maximum(d @ w64(layer, "hidden_kernel") + w64(layer, "hidden_bias"), 0.0)
        return hidden @ w64(layer, "output_kernel") + w64(layer, "output_bias")

    scale = sigmoid(mlp(x.mean(axis=(1, 2))) + mlp(x.max(axis=(1, 2))))
    return x * scale[:, None, None, :]


def conv2d_same(image, kernel, bias):
    """Cross-correlation of (B, H, W, Cin) with (k, k, Cin, Cout), zero 'same' padding, loops."""
    k = kernel.shape[0]
    pad = k // 2
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    batch, height, width, _ = image.shape
    out = np.zeros((batch, height, width, kernel.shape[-1]))
    for i in range(height):
        for j in range(width):
            window = padded[:, i:i + k, j:j + k, :]   # (B, k, k, Cin)
            out[:, i, j, :] = np.einsum("bhwc,hwco->bo", window, kernel)
    return out + bias


def spatial_map(layer, x):
    """sigmoid(conv([mean_c(x); max_c(x)])), (B, H, W, 1), with the SpatialAttention weights."""
    x = np.asarray(x, np.float64)
    descriptor = np.stack([x.mean(axis=-1), x.max(axis=-1)], axis=-1)
    return sigmoid(conv2d_same(descriptor, w64(layer, "kernel"), w64(layer, "bias")))
