"""The paper's formulas that the layers compute, in `keras.ops` (any Keras backend).

LRN (section 3.3): b = a * (k + alpha * W(a^2)) ** -beta, where W sums each
channel's window of n channels, clipped at the first and last channel; and the
padding that makes 'valid' max pooling round up, as Caffe's does (section 3.4).
"""

import numpy as np
from keras import ops


def window_matrix(channels, n, scale=1.0):
    """[channels, channels] band matrix: entry (j, i) is `scale` where |i - j| <= n // 2.

    `x @ window_matrix(...)` sums each channel's clipped window of n channels
    (the sum in LRN's denominator), as one small matmul over the channel axis.
    """
    index = np.arange(channels)
    band = np.abs(index[:, None] - index[None, :]) <= n // 2
    return band.astype(np.float32) * np.float32(scale)


def inverse_power(t, beta):
    """t ** -beta; for the paper's beta = 0.75 as two roots, cheaper than pow."""
    if beta == 0.75:
        root = ops.rsqrt(t)
        return root * ops.sqrt(root)
    return ops.power(t, -beta)


def window_sum(v, n):
    """Each channel's clipped window of n channels summed: v's channels padded, shifted n
    times."""
    channels, half = v.shape[-1], n // 2
    padded = ops.pad(v, [[0, 0]] * (len(v.shape) - 1) + [[half, half]])
    total = padded[..., 0:channels]
    for shift in range(1, n):
        total = total + padded[..., shift:shift + channels]
    return total


def lrn_ops(x, n, k, alpha, beta):
    """The paper's LRN of float32 `x` in `keras.ops`: x * (k + alpha * W(x^2)) ** -beta, where W
    sums each channel's window; autodiff's gradient, on any backend."""
    return x * inverse_power(k + alpha * window_sum(ops.square(x), n), beta)


def ceil_padding(size, window, stride):
    """Rows (or columns) to append so 'valid' pooling gives ceil((size - window) / stride) + 1."""
    return (-(size - window) % stride) if size >= window else 0
