"""Layers the paper needs that Keras does not ship as the paper defines them.

* `LocalResponseNormalization`: section 3.3 of the paper, with its own
  argument names (`n`, `k`, `alpha`, `beta`) and alpha multiplying the plain sum.
* `Placed*`: Keras layers whose variables *and* ops live on one device, so a
  model can be split into the paper's two GPU towers (section 3.2). The device
  scope is entered in `build()` (variables) and in `call()` (ops): a scope
  around layer creation alone places variables, not the ops of a traced call.
"""

import keras
import tensorflow as tf

from alexnet_tf import paper

_PACKAGE = "alexnet_tf"
_HALF_DTYPES = (tf.float16, tf.bfloat16)


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
      device: Optional device string (e.g. "/GPU:1") for this layer's ops.
      **kwargs: Standard Keras layer arguments (name, dtype, ...).

    Example:

    >>> lrn = LocalResponseNormalization(n=5, k=2.0, alpha=1e-4, beta=0.75)
    >>> lrn(tf.ones([1, 2, 2, 8])).shape
    TensorShape([1, 2, 2, 8])
    """

    def __init__(self, n=paper.LRN_N, k=paper.LRN_K, alpha=paper.LRN_ALPHA,
                 beta=paper.LRN_BETA, device=None, **kwargs):
        super().__init__(**kwargs)
        if int(n) != n or n < 1 or n % 2 == 0:
            raise ValueError(f"LocalResponseNormalization: n must be a positive odd integer "
                             f"(a window centred on each channel), got n={n!r}.")
        self.n = int(n)
        self.k = float(k)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.device = device

    def call(self, inputs):
        with tf.device(self.device):
            x = tf.convert_to_tensor(inputs)
            out_dtype = x.dtype
            if out_dtype in _HALF_DTYPES:
                x = tf.cast(x, tf.float32)
            y = tf.nn.local_response_normalization(
                x, depth_radius=self.n // 2, bias=self.k, alpha=self.alpha, beta=self.beta)
            return tf.cast(y, out_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "n": self.n, "k": self.k, "alpha": self.alpha,
                "beta": self.beta, "device": self.device}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PlacedConv2D(_PlacedMixin, keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose kernel, bias and ops live on `device`."""


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PlacedDense(_PlacedMixin, keras.layers.Dense):
    """`keras.layers.Dense` whose kernel, bias and ops live on `device`."""


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PlacedMaxPooling2D(_PlacedMixin, keras.layers.MaxPooling2D):
    """`keras.layers.MaxPooling2D` whose ops run on `device`."""


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PlacedDropout(_PlacedMixin, keras.layers.Dropout):
    """`keras.layers.Dropout` whose ops run on `device`."""


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PlacedConcatenate(_PlacedMixin, keras.layers.Concatenate):
    """`keras.layers.Concatenate` that gathers the towers' activations on `device`."""


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PlacedFlatten(_PlacedMixin, keras.layers.Flatten):
    """`keras.layers.Flatten` whose ops run on `device`."""
