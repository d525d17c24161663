"""Layers the paper needs that Keras does not ship as the paper defines them.

* `LocalResponseNormalization`: section 3.3 of the paper, with its own
  argument names (`n`, `k`, `alpha`, `beta`) and alpha multiplying the plain sum.
  Written in `keras.ops` for every Keras backend; on TensorFlow it may use TF's
  LRN kernels or band-matrix window sums instead (`tf_paths.py`), which compute
  the same formula faster on some CPUs.
* `Placed*`: Keras layers whose variables *and* ops live on one device, so a
  model can be split into the paper's two GPU towers (section 3.2). The device
  scope is entered in `build()` (variables) and in `call()` (ops): a scope
  around layer creation alone places variables, not the ops of a traced call.
  Placement is TensorFlow's: on JAX and PyTorch the layers are unplaced.

Imports no TensorFlow: on the TensorFlow backend its fast paths are imported
on first use.
"""

import contextlib

import keras
from keras import ops

from alexnet_tf import paper
from alexnet_tf.config import POOL_ROUNDINGS
from alexnet_tf.model.formulas import ceil_padding, lrn_ops

_PACKAGE = "alexnet_tf"
_HALF_DTYPES = ("float16", "bfloat16")
# "ops" runs on every backend; "kernel" and "matmul" are TensorFlow's (tf_paths.py), and on
# another backend every implementation computes with "ops".
LRN_IMPLEMENTATIONS = ("auto", "kernel", "matmul", "ops")


def on_tensorflow():
    """Whether Keras runs on its TensorFlow backend (the only one that places devices)."""
    return keras.backend.backend() == "tensorflow"


def _tf_paths():
    from alexnet_tf.model import tf_paths
    return tf_paths


def device_scope(device):
    """`tf.device(device)` on TensorFlow (None included, as TF reads it); elsewhere nothing."""
    if not on_tensorflow():
        return contextlib.nullcontext()
    import tensorflow as tf
    return tf.device(device)


class _PlacedMixin:
    """Runs the layer's build and call under `tf.device(device)` when a device is set."""

    def __init__(self, *args, device=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.device = device

    def build(self, input_shape):
        with device_scope(self.device):
            super().build(input_shape)

    def __call__(self, *args, **kwargs):
        # Keras runs build() and call() inside __call__, eagerly, while tracing a
        # tf.function and while the functional model replays its graph; wrapping
        # __call__ (not call) keeps Keras' inspection of call()'s signature intact.
        with device_scope(self.device):
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
      implementation: "ops" (`lrn_ops`: `keras.ops`, any backend), or on
        TensorFlow "kernel" (TF's LRN and LRNGrad kernels), "matmul" (the
        window sums as band-matrix matmuls, `tf_paths.lrn_matmul`) or "auto"
        (the one measured faster on this hardware, `hardware.choose_lrn`). All
        compute the same formula; on JAX and PyTorch every choice runs "ops".
      output_channels: None (all), or (begin, end): normalise across all the
        input's channels but return only channels begin..end-1. A tower whose
        input is both towers' maps uses it to normalise across the tower
        boundary, as Caffe's norm1/norm2 do.
      device: Optional device string (e.g. "/GPU:1") for this layer's ops.
      **kwargs: Standard Keras layer arguments (name, dtype, ...).

    Example:

    >>> lrn = LocalResponseNormalization(n=5, k=2.0, alpha=1e-4, beta=0.75)
    >>> tuple(lrn(np.ones([1, 2, 2, 8], 'float32')).shape)
    (1, 2, 2, 8)
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

    def resolved_implementation(self):
        """The implementation this layer computes with here: "ops" on a backend other than
        TensorFlow; "auto" as `hardware.choose_lrn` picks for this machine."""
        if not on_tensorflow():
            return "ops"
        if self.implementation == "auto":
            from alexnet_tf import hardware
            return hardware.choose_lrn(hardware.detected())[0]
        return self.implementation

    def call(self, inputs):
        with device_scope(self.device):
            x = ops.convert_to_tensor(inputs)
            out_dtype = keras.backend.standardize_dtype(x.dtype)
            if out_dtype in _HALF_DTYPES:
                x = ops.cast(x, "float32")
            implementation = self.resolved_implementation()
            if implementation == "ops":
                y = lrn_ops(x, self.n, self.k, self.alpha, self.beta)
            elif implementation == "matmul":
                y = _tf_paths().lrn_matmul(x, self.n, self.k, self.alpha, self.beta)
            else:
                y = _tf_paths().lrn_kernel(x, self.n, self.k, self.alpha, self.beta)
            if self.output_channels is not None:
                y = y[..., self.output_channels[0]:self.output_channels[1]]
            return ops.cast(y, out_dtype)

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


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PlacedMaxPooling2D(_PlacedMixin, keras.layers.MaxPooling2D):
    """`keras.layers.MaxPooling2D` whose ops run on `device`, rounding down or up.

    On TensorFlow, inside an XLA-compiled function, it pools with
    `tf_paths.max_pool_slices` (same values, a faster gradient under XLA);
    elsewhere with Keras' own max pooling.

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
                inputs = ops.pad(inputs, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]],
                                 constant_values=float("-inf"))
        if (on_tensorflow() and self.padding == "valid" and self.data_format == "channels_last"
                and _tf_paths().in_xla_compilation()):
            return _tf_paths().max_pool_slices(inputs, self.pool_size, self.strides)
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
