"""Layers the paper needs that Keras does not ship as the paper defines them.

* `LocalResponseNormalization`: section 3.3 of the paper, with its own
  argument names (`n`, `k`, `alpha`, `beta`) and alpha multiplying the plain sum;
  TF's LRN kernels or, where they are slow (AVX2 CPUs), band-matrix window sums.
* `Placed*`: Keras layers whose variables *and* ops live on one device, so a
  model can be split into the paper's two GPU towers (section 3.2). The device
  scope is entered in `build()` (variables) and in `call()` (ops): a scope
  around layer creation alone places variables, not the ops of a traced call.
"""

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import hardware, paper
from alexnet_tf.config import POOL_ROUNDINGS

_PACKAGE = "alexnet_tf"
_HALF_DTYPES = (tf.float16, tf.bfloat16)
LRN_IMPLEMENTATIONS = ("auto", "kernel", "matmul")


def window_matrix(channels, n, scale=1.0):
    """[channels, channels] band matrix: entry (j, i) is `scale` where |i - j| <= n // 2.

    `x @ window_matrix(...)` sums each channel's clipped window of n channels
    (the sum in LRN's denominator), as one small matmul over the channel axis.
    """
    index = np.arange(channels)
    band = np.abs(index[:, None] - index[None, :]) <= n // 2
    return band.astype(np.float32) * np.float32(scale)


def _channel_matmul(x, matrix):
    """x [..., C] times matrix [C, C] along the channel axis."""
    flat = tf.reshape(x, [-1, x.shape[-1]])
    return tf.reshape(tf.matmul(flat, matrix), tf.shape(x))


def _inverse_power(t, beta):
    """t ** -beta; for the paper's beta = 0.75 as two roots, cheaper than pow."""
    if beta == 0.75:
        root = tf.math.rsqrt(t)
        return root * tf.sqrt(root)
    return tf.pow(t, -beta)


def window_sum(v, n):
    """Each channel's clipped window of n channels summed: v's channels padded and shifted n times."""
    channels, half = v.shape[-1], n // 2
    padded = tf.pad(v, [[0, 0]] * (v.shape.rank - 1) + [[half, half]])
    total = padded[..., 0:channels]
    for shift in range(1, n):
        total = total + padded[..., shift:shift + channels]
    return total


def lrn_matmul(x, n, k, alpha, beta):
    """The paper's LRN (float32 `x`), with window sums TF's own kernels do not use.

    Forward: t = k + alpha * W(x^2), b = x * t^-beta, where W sums the window.
    Outside XLA the window sums are band-matrix matmuls over the channel axis,
    with autodiff's gradient (faster than TF's LRN kernels on AVX2 CPUs).
    Inside XLA they are n shifted slices, which XLA fuses with the element-wise
    ops around them, and the gradient is written out (W is symmetric):
      dL/da = g * t^-beta - 2 * alpha * beta * a * W(g * b / t).
    Only there: `tf.custom_gradient` in a traced function keeps the graph and
    its variables alive for the life of the process. docs/BENCHMARKS.md has
    the measurements.
    """
    if not in_xla_compilation():
        sum_alpha = tf.constant(window_matrix(x.shape[-1], n, alpha))
        t = k + _channel_matmul(tf.square(x), sum_alpha)
        return x * _inverse_power(t, beta)

    @tf.custom_gradient
    def forward(a):
        t = k + alpha * window_sum(tf.square(a), n)
        scale = _inverse_power(t, beta)
        b = a * scale

        def grad(g):
            return g * scale + (-2.0 * alpha * beta) * a * window_sum(g * b / t, n)
        return b, grad

    return forward(x)


class _PlacedMixin:
    """Runs the layer's build and call under `tf.device(device)` when a device is set."""

    def __init__(self, *args, device=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.device = device

    def build(self, input_shape):
        with tf.device(self.device):
            super().build(input_shape)

    def __call__(self, *args, **kwargs):
        # Keras runs build() and call() inside __call__, eagerly, while tracing a
        # tf.function and while the functional model replays its graph; wrapping
        # __call__ (not call) keeps Keras' inspection of call()'s signature intact.
        with tf.device(self.device):
            return super().__call__(*args, **kwargs)

    def get_config(self):
        return {**super().get_config(), "device": self.device}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalisation across channels (the paper's section 3.3).

    For every position, channel `i` of `a` becomes

        b_i = a_i / (k + alpha * sum_{j = max(0, i - n//2)}^{min(N - 1, i + n//2)} a_j**2) ** beta

    where N is the number of channels: the window of `n` adjacent channels is
    clipped at the first and last channel. `alpha` multiplies the plain sum of
    squares; libraries that divide alpha by n (Caffe, PyTorch) need `alpha * n`
    to match. float16 and bfloat16 inputs are computed in float32 (the squared
    sum overflows float16, and TF's LRN kernel has no bfloat16 CPU kernel) and
    returned in the input's dtype.

    Args:
      n: Size of the channel window; odd, so that it is centred on channel i.
      k: Additive constant (TF's `bias`).
      alpha: Scale of the sum of squares (not divided by n).
      beta: Exponent.
      implementation: "kernel" (TF's LRN and LRNGrad kernels), "matmul" (the
        window sums as band-matrix matmuls, `lrn_matmul`) or "auto" (the one
        measured faster on this hardware, `hardware.choose_lrn`). Both
        compute the same formula.
      output_channels: None (all), or (begin, end): normalise across all the
        input's channels but return only channels begin..end-1. A tower whose
        input is both towers' maps uses it to normalise across the tower
        boundary, as Caffe's norm1/norm2 do.
      device: Optional device string (e.g. "/GPU:1") for this layer's ops.
      **kwargs: Standard Keras layer arguments (name, dtype, ...).

    Example:

    >>> lrn = LocalResponseNormalization(n=5, k=2.0, alpha=1e-4, beta=0.75)
    >>> lrn(tf.ones([1, 2, 2, 8])).shape
    TensorShape([1, 2, 2, 8])
    """

    def __init__(self, n=paper.LRN_N, k=paper.LRN_K, alpha=paper.LRN_ALPHA,
                 beta=paper.LRN_BETA, implementation="auto", output_channels=None, device=None,
                 **kwargs):
        super().__init__(**kwargs)
        if int(n) != n or n < 1 or n % 2 == 0:
            raise ValueError(f"LocalResponseNormalization: n must be a positive odd integer "
                             f"(a window centred on each channel), got n={n!r}.")
        self.n = int(n)
        self.k = float(k)
        self.alpha = float(alpha)
        self.beta = float(beta)
        if implementation not in LRN_IMPLEMENTATIONS:
            raise ValueError(f"LocalResponseNormalization: implementation must be one of "
                             f"{', '.join(LRN_IMPLEMENTATIONS)}, got {implementation!r}.")
        self.implementation = implementation
        self.output_channels = None if output_channels is None else tuple(
            int(c) for c in output_channels)
        self.device = device

    def call(self, inputs):
        with tf.device(self.device):
            x = tf.convert_to_tensor(inputs)
            out_dtype = x.dtype
            if out_dtype in _HALF_DTYPES:
                x = tf.cast(x, tf.float32)
            implementation = self.implementation
            if implementation == "auto":
                implementation = hardware.choose_lrn(hardware.detected())[0]
            if implementation == "matmul":
                y = lrn_matmul(x, self.n, self.k, self.alpha, self.beta)
            else:
                y = tf.nn.local_response_normalization(
                    x, depth_radius=self.n // 2, bias=self.k, alpha=self.alpha, beta=self.beta)
            if self.output_channels is not None:
                y = y[..., self.output_channels[0]:self.output_channels[1]]
            return tf.cast(y, out_dtype)

    def compute_output_shape(self, input_shape):
        if self.output_channels is None:
            return input_shape
        return tuple(input_shape[:-1]) + (self.output_channels[1] - self.output_channels[0],)

    def get_config(self):
        return {**super().get_config(), "n": self.n, "k": self.k, "alpha": self.alpha,
                "beta": self.beta, "implementation": self.implementation,
                "output_channels": self.output_channels, "device": self.device}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PlacedConv2D(_PlacedMixin, keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose kernel, bias and ops live on `device`."""


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PlacedDense(_PlacedMixin, keras.layers.Dense):
    """`keras.layers.Dense` whose kernel, bias and ops live on `device`."""


def max_pool_slices(x, pool_size, strides):
    """'valid' max pooling of NHWC `x` as the maximum of pool_h * pool_w strided slices.

    The values and the gradient of TF's MaxPool (the gradient goes to the first
    maximum of each window in row-major order, as MaxPoolGrad's does), written
    with slices, pads and reshapes only. XLA fuses these into a few loops,
    where its own max pooling (reduce-window, and select-and-scatter with
    iotas for the gradient) took a quarter of the AVX2 CPU's train step.
    """
    (ph, pw), (sh, sw) = pool_size, strides
    height, width = x.shape[1], x.shape[2]
    out_h, out_w = (height - ph) // sh + 1, (width - pw) // sw + 1
    offsets = [(i, j) for i in range(ph) for j in range(pw)]

    def window(a, i, j):
        return a[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw, :]

    @tf.custom_gradient
    def pool(a):
        # The maximum and, beside it, which offset held it first (strict ">": the first
        # maximum in row-major order, as MaxPoolGrad picks). The gradient needs only that
        # index, not the input again.
        y, first = window(a, 0, 0), None
        for k, (i, j) in enumerate(offsets[1:], start=1):
            candidate = window(a, i, j)
            larger = tf.greater(candidate, y)
            y = tf.where(larger, candidate, y)
            index = tf.fill(tf.shape(y), tf.constant(k, tf.int32))
            first = tf.where(larger, index, tf.zeros_like(index) if first is None else first)

        def grad(g):
            # Input row h = sh * q + r receives window offset i = sh * d + r of output row
            # o = q - d: per phase (r_h, r_w), a sum of the masked gradients shifted by d.
            q_h = max(-(-height // sh), out_h + (ph - 1) // sh)
            q_w = max(-(-width // sw), out_w + (pw - 1) // sw)
            phases = {}
            for k, (i, j) in enumerate(offsets):
                hit = tf.equal(first, k) if first is not None else tf.ones_like(g, tf.bool)
                (d_h, r_h), (d_w, r_w) = divmod(i, sh), divmod(j, sw)
                part = tf.pad(tf.where(hit, g, tf.zeros_like(g)),
                              [[0, 0], [d_h, q_h - out_h - d_h], [d_w, q_w - out_w - d_w], [0, 0]])
                phases[r_h, r_w] = phases[r_h, r_w] + part if (r_h, r_w) in phases else part
            zeros = tf.zeros_like(next(iter(phases.values())))
            rows = [tf.stack([phases.get((r_h, r_w), zeros) for r_w in range(sw)], axis=3)
                    for r_h in range(sh)]                              # each [N, q_h, q_w, sw, C]
            full = tf.stack(rows, axis=2)                             # [N, q_h, sh, q_w, sw, C]
            full = tf.reshape(full, [-1, q_h * sh, q_w * sw, a.shape[-1]])
            return full[:, :height, :width, :]
        return y, grad

    return pool(x)


def in_xla_compilation():
    """Whether the ops being created go into an XLA-compiled function (jit_compile=True)."""
    return tf.__internal__.get_enclosing_xla_context() is not None




def ceil_padding(size, window, stride):
    """Rows (or columns) to append so 'valid' pooling gives ceil((size - window) / stride) + 1."""
    return (-(size - window) % stride) if size >= window else 0


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PlacedMaxPooling2D(_PlacedMixin, keras.layers.MaxPooling2D):
    """`keras.layers.MaxPooling2D` whose ops run on `device`, rounding down or up.

    Inside an XLA-compiled function it pools with `max_pool_slices` (same
    values, a faster gradient under XLA); elsewhere with TF's MaxPool kernel.

    Args:
      rounding: "floor" (Keras' 'valid' pooling: windows that fit) or "ceil"
        (Caffe's: one more window where the last one would overhang, clipped at
        the edge; computed by padding the bottom and right with -inf).
      device: Optional device string for this layer's ops.
      **kwargs: `keras.layers.MaxPooling2D`'s arguments.
    """

    def __init__(self, *args, rounding="floor", **kwargs):
        super().__init__(*args, **kwargs)
        if rounding not in POOL_ROUNDINGS:
            raise ValueError(f"PlacedMaxPooling2D: rounding must be one of "
                             f"{', '.join(POOL_ROUNDINGS)}, got {rounding!r}.")
        if rounding == "ceil" and (self.padding, self.data_format) != ("valid", "channels_last"):
            raise ValueError("PlacedMaxPooling2D: rounding='ceil' needs padding='valid' and "
                             "channels_last.")
        self.rounding = rounding

    def _ceil_pads(self, shape):
        return [ceil_padding(shape[axis], self.pool_size[i], self.strides[i])
                for i, axis in enumerate((1, 2))]

    def call(self, inputs):
        if self.rounding == "ceil":
            pad_h, pad_w = self._ceil_pads(inputs.shape)
            if pad_h or pad_w:
                inputs = tf.pad(inputs, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]],
                                constant_values=float("-inf"))
        if (in_xla_compilation() and self.padding == "valid"
                and self.data_format == "channels_last"):
            return max_pool_slices(inputs, self.pool_size, self.strides)
        return super().call(inputs)

    def compute_output_shape(self, input_shape):
        if self.rounding == "ceil":
            pad_h, pad_w = self._ceil_pads(input_shape)
            input_shape = (input_shape[0], input_shape[1] + pad_h, input_shape[2] + pad_w,
                           input_shape[3])
        return super().compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "rounding": self.rounding}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PlacedDropout(_PlacedMixin, keras.layers.Dropout):
    """`keras.layers.Dropout` whose ops run on `device`."""


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PlacedConcatenate(_PlacedMixin, keras.layers.Concatenate):
    """`keras.layers.Concatenate` that gathers the towers' activations on `device`."""


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PlacedFlatten(_PlacedMixin, keras.layers.Flatten):
    """`keras.layers.Flatten` whose ops run on `device`."""
