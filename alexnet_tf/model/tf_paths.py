"""TensorFlow's fast paths for the layers (`layers.py`), equal to their `keras.ops` forms.

TF's LRN kernels; LRN with band-matrix window sums (faster than TF's kernels on
AVX2 CPUs) and, inside XLA, with shifted slices and a written-out gradient; max
pooling as strided slices inside XLA. `layers.py` imports this module only on
the TensorFlow backend. docs/BENCHMARKS.md has the measurements.
"""

import tensorflow as tf

from alexnet_tf.model.formulas import inverse_power, window_matrix, window_sum


def in_xla_compilation():
    """Whether the ops being created go into an XLA-compiled function (jit_compile=True)."""
    return tf.__internal__.get_enclosing_xla_context() is not None


def lrn_kernel(x, n, k, alpha, beta):
    """The paper's LRN by TF's LRN and LRNGrad kernels (alpha multiplies the plain sum)."""
    return tf.nn.local_response_normalization(x, depth_radius=n // 2, bias=k, alpha=alpha,
                                              beta=beta)


def _channel_matmul(x, matrix):
    """x [..., C] times matrix [C, C] along the channel axis."""
    flat = tf.reshape(x, [-1, x.shape[-1]])
    return tf.reshape(tf.matmul(flat, matrix), tf.shape(x))


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
        return x * inverse_power(t, beta)

    @tf.custom_gradient
    def forward(a):
        t = k + alpha * window_sum(tf.square(a), n)
        scale = inverse_power(t, beta)
        b = a * scale

        def grad(g):
            return g * scale + (-2.0 * alpha * beta) * a * window_sum(g * b / t, n)
        return b, grad

    return forward(x)


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
