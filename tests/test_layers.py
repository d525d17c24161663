"""LocalResponseNormalization against a numpy implementation of the paper's formula."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import LocalResponseNormalization
from alexnet_tf.model.formulas import window_matrix
from alexnet_tf.model.layers import PlacedMaxPooling2D
from alexnet_tf.model.tf_paths import max_pool_slices

# TF's LRN kernels, band-matrix window sums with a hand-written gradient, and `keras.ops` (every
# backend's): the same formula.
IMPLEMENTATIONS = ["kernel", "matmul", "ops"]
# (n, k, alpha, beta, channels) that the formula's tests run, eagerly and inside XLA.
LRN_CASES = [
    (5, 2.0, 1e-4, 0.75, 48),   # the paper's constants, one tower's conv1 width
    (5, 2.0, 5e-2, 0.75, 7),    # large alpha so the sum matters; few channels: edges dominate
    (3, 1.0, 0.5, 0.5, 4),
    (1, 0.5, 1.0, 1.0, 3),      # window of one channel
    (9, 2.0, 1e-2, 0.75, 5),    # window wider than the channel count: clipped both sides
]


def lrn_reference(a, n=5, k=2.0, alpha=1e-4, beta=0.75):
    """The paper's section 3.3 formula, written out channel by channel (float64)."""
    a = np.asarray(a, np.float64)
    num_channels = a.shape[-1]
    b = np.empty_like(a)
    for i in range(num_channels):
        lo, hi = max(0, i - n // 2), min(num_channels - 1, i + n // 2)
        window = np.sum(a[..., lo:hi + 1] ** 2, axis=-1)
        b[..., i] = a[..., i] / (k + alpha * window) ** beta
    return b


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("n,k,alpha,beta,channels", LRN_CASES)
def test_lrn_matches_numpy_formula(n, k, alpha, beta, channels, implementation):
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 10.0, size=(2, 3, 4, channels)).astype(np.float32)
    layer = LocalResponseNormalization(n=n, k=k, alpha=alpha, beta=beta,
                                       implementation=implementation)
    got = layer(a).numpy()
    np.testing.assert_allclose(got, lrn_reference(a, n, k, alpha, beta), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_lrn_edge_channels_use_clipped_window(implementation):
    # One position, 3 channels, n=5: every window covers all 3 channels, nothing more.
    a = np.array([[[[1.0, 2.0, 3.0]]]], np.float32)
    got = LocalResponseNormalization(n=5, k=1.0, alpha=1.0, beta=1.0,
                                     implementation=implementation)(a).numpy().ravel()
    np.testing.assert_allclose(got, np.array([1.0, 2.0, 3.0]) / (1.0 + 14.0), rtol=1e-6)
    # n=3: channel 0 sees channels 0..1, channel 2 sees 1..2.
    got = LocalResponseNormalization(n=3, k=1.0, alpha=1.0, beta=1.0,
                                     implementation=implementation)(a).numpy().ravel()
    np.testing.assert_allclose(got, [1 / 6.0, 2 / 15.0, 3 / 14.0], rtol=1e-6)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_lrn_alpha_is_not_divided_by_n(implementation):
    a = np.full((1, 1, 1, 5), 10.0, np.float32)     # centre channel's window: 5 * 100 = 500
    got = LocalResponseNormalization(n=5, k=2.0, alpha=1e-2, beta=0.75,
                                     implementation=implementation)(a).numpy()[0, 0, 0, 2]
    assert got == pytest.approx(10.0 / (2.0 + 1e-2 * 500.0) ** 0.75, rel=1e-6)
    assert got != pytest.approx(10.0 / (2.0 + 1e-2 / 5 * 500.0) ** 0.75, rel=1e-3)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("n,beta", [(5, 0.75), (3, 0.5)])   # 0.75 has its own two-root path
def test_lrn_gradient_matches_finite_differences_of_the_formula(implementation, n, beta):
    rng = np.random.default_rng(1)
    a = rng.normal(0.0, 3.0, size=(1, 2, 2, 6))
    weights = rng.normal(size=a.shape)               # a random linear read-out of the output
    k, alpha = 2.0, 0.05
    layer = LocalResponseNormalization(n=n, k=k, alpha=alpha, beta=beta,
                                       implementation=implementation)
    x = tf.constant(a, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) * tf.constant(weights, tf.float32))
    grad = tape.gradient(loss, x).numpy()

    np.testing.assert_allclose(grad, numeric_lrn_gradient(a, weights, n, k, alpha, beta),
                               rtol=1e-3, atol=1e-5)


def numeric_lrn_gradient(a, weights, n, k, alpha, beta, eps=1e-6):
    """d/da of sum(lrn_reference(a) * weights), by central differences in float64."""
    numeric = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        plus, minus = a.copy(), a.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric[idx] = (np.sum(lrn_reference(plus, n, k, alpha, beta) * weights)
                        - np.sum(lrn_reference(minus, n, k, alpha, beta) * weights)) / (2 * eps)
    return numeric


@pytest.mark.parametrize("n,k,alpha,beta,channels", LRN_CASES)
def test_lrn_inside_xla_matches_the_formula_and_its_gradient(n, k, alpha, beta, channels):
    # Inside XLA the "matmul" implementation sums windows by shifted slices, with a written-out
    # gradient: both checked against the numpy formula, the gradient by finite differences.
    rng = np.random.default_rng(6)
    a = rng.normal(0.0, 3.0, size=(1, 2, 2, channels))
    weights = rng.normal(size=a.shape)
    layer = LocalResponseNormalization(n=n, k=k, alpha=alpha, beta=beta, implementation="matmul")

    @tf.function(jit_compile=True)
    def value_and_grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.constant(weights, tf.float32))
        return y, tape.gradient(loss, x)
    y, grad = value_and_grad(tf.constant(a, tf.float32))
    np.testing.assert_allclose(y.numpy(), lrn_reference(a, n, k, alpha, beta), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(grad.numpy(), numeric_lrn_gradient(a, weights, n, k, alpha, beta),
                               rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype,rtol", [("float32", 1e-5), ("float16", 2e-3), ("bfloat16", 1e-2)])
def test_lrn_runs_in_every_float_dtype_on_cpu(dtype, rtol, implementation):
    rng = np.random.default_rng(2)
    a = rng.normal(0.0, 50.0, size=(2, 5, 5, 16)).astype(np.float32)
    x = tf.cast(a, dtype)
    layer = LocalResponseNormalization(dtype=dtype, alpha=1e-3, implementation=implementation)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(tf.cast(y, tf.float32))
    assert y.dtype == tf.as_dtype(dtype)
    grad = tape.gradient(loss, x)
    assert grad.dtype == tf.as_dtype(dtype)
    assert np.all(np.isfinite(tf.cast(grad, tf.float32).numpy()))
    # Compare against the formula on the inputs as rounded to that dtype.
    expected = lrn_reference(tf.cast(x, tf.float32).numpy(), alpha=1e-3)
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), expected, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_lrn_float16_does_not_overflow_on_large_activations(implementation):
    # 300**2 * 5 = 450,000 exceeds float16's range: the sum must not be taken in float16.
    x = tf.fill([1, 1, 1, 5], tf.constant(300.0, tf.float16))
    y = LocalResponseNormalization(dtype="float16", implementation=implementation)(x)
    expected = lrn_reference(np.full((1, 1, 1, 5), 300.0))
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), expected, rtol=2e-3)


def test_lrn_config_round_trip_and_registration():
    layer = LocalResponseNormalization(n=3, k=1.5, alpha=2e-4, beta=0.5, implementation="matmul",
                                       name="lrn")
    config = layer.get_config()
    assert {config[key] for key in ("n", "k", "alpha", "beta")} == {3, 1.5, 2e-4, 0.5}
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(clone, LocalResponseNormalization)
    assert (clone.n, clone.k, clone.alpha, clone.beta) == (3, 1.5, 2e-4, 0.5)
    assert clone.implementation == "matmul"
    with pytest.raises(ValueError, match="implementation must be one of"):
        LocalResponseNormalization(implementation="fast")


def test_tensorflows_fast_paths_equal_the_keras_ops_path():
    """What JAX and PyTorch compute ("ops") and TensorFlow's own paths, values and gradients on
    conv1-sized maps of one tower, within 1e-5."""
    a = tf.constant(np.random.default_rng(11).normal(size=(2, 13, 13, 48)) * 20, tf.float32)
    results = {}
    for implementation in ("ops", "kernel", "matmul"):
        layer = LocalResponseNormalization(implementation=implementation)
        with tf.GradientTape() as tape:
            tape.watch(a)
            y = layer(a)
            loss = tf.reduce_sum(y * tf.cos(a))
        results[implementation] = (y.numpy(), tape.gradient(loss, a).numpy())
    for implementation in ("kernel", "matmul"):
        for got, expected in zip(results[implementation], results["ops"]):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_window_matrix_sums_each_clipped_window():
    # Hand-written: 4 channels, n=3 -> each channel's window is itself and its neighbours.
    expected = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]], np.float32)
    np.testing.assert_array_equal(window_matrix(4, 3), expected)
    np.testing.assert_array_equal(window_matrix(4, 3, scale=0.5), expected * 0.5)
    np.testing.assert_array_equal(window_matrix(3, 9), np.ones((3, 3), np.float32))


@pytest.mark.parametrize("bad_n", [0, 4, -1, 2.5])
def test_lrn_rejects_a_window_without_a_centre(bad_n):
    with pytest.raises(ValueError, match="n must be a positive odd integer"):
        LocalResponseNormalization(n=bad_n)


def max_pool_reference(x, size, stride, upstream):
    """Max pooling ('valid') and its gradient in numpy: each window's gradient goes to the
    first of its maxima in row-major order."""
    n, h, w, c = x.shape
    oh, ow = (h - size) // stride + 1, (w - size) // stride + 1
    y = np.zeros((n, oh, ow, c))
    grad = np.zeros_like(x, dtype=np.float64)
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                for ch in range(c):
                    window = x[b, i * stride:i * stride + size, j * stride:j * stride + size, ch]
                    first = np.argmax(window)              # numpy: the first maximum, row-major
                    y[b, i, j, ch] = window.flat[first]
                    di, dj = divmod(first, size)
                    grad[b, i * stride + di, j * stride + dj, ch] += upstream[b, i, j, ch]
    return y, grad


@pytest.mark.parametrize("shape,size,stride", [
    ((2, 13, 13, 3), 3, 2),     # overlapping 3/2 pooling on an odd side (conv5's 13x13)
    ((1, 12, 10, 2), 3, 2),     # even sides: the last row and column are in no window
    ((1, 8, 8, 2), 2, 2),       # the 2/2 ablation
    ((1, 9, 7, 1), 3, 3),
])
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_slices_matches_numpy_values_and_gradient(shape, size, stride, ties):
    rng = np.random.default_rng(3)
    x = rng.normal(size=shape)
    if ties:                                    # ReLU outputs: whole windows of equal zeros
        x = np.maximum(x, 0.0)
    out_shape = (shape[0], (shape[1] - size) // stride + 1, (shape[2] - size) // stride + 1,
                 shape[3])
    upstream = rng.normal(size=out_shape)
    xt = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = max_pool_slices(xt, (size, size), (stride, stride))
    grad = tape.gradient(y, xt, output_gradients=tf.constant(upstream, tf.float32))
    y_ref, grad_ref = max_pool_reference(x, size, stride, upstream)
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grad.numpy(), grad_ref, rtol=1e-5, atol=1e-6)


def test_pooling_inside_xla_gives_the_kernels_values_and_gradient():
    layer = PlacedMaxPooling2D(3, 2)
    x = tf.constant(np.random.default_rng(4).normal(size=(2, 27, 27, 4)), tf.float32)
    upstream = tf.constant(np.random.default_rng(5).normal(size=(2, 13, 13, 4)), tf.float32)

    def value_and_grad(a):
        with tf.GradientTape() as tape:
            tape.watch(a)
            y = layer(a)
        return y, tape.gradient(y, a, output_gradients=upstream)
    eager = value_and_grad(x)                                    # TF's MaxPool kernels
    compiled = tf.function(value_and_grad, jit_compile=True)(x)  # max_pool_slices
    for a, b in zip(eager, compiled):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6, atol=1e-6)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def max_pool_ceil_reference(x, size, stride):
    """Caffe's ceil-mode max pooling (NHWC, float64): the last window clipped at the edge."""
    height, width = x.shape[1:3]
    out_h, out_w = -(-(height - size) // stride) + 1, -(-(width - size) // stride) + 1
    y = np.empty((x.shape[0], out_h, out_w, x.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            y[:, i, j] = x[:, i * stride:i * stride + size, j * stride:j * stride + size].max((1, 2))
    return y


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("size,stride,shape", [(2, 2, (1, 7, 5, 3)), (3, 2, (2, 8, 6, 4)),
                                               (3, 2, (1, 7, 7, 2))])
def test_ceil_pooling_matches_caffes(size, stride, shape, jit):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32) - 5.0   # all negative-ish
    layer = PlacedMaxPooling2D(size, stride, rounding="ceil")
    run = tf.function(lambda t: layer(t), jit_compile=jit)
    got = run(tf.constant(x)).numpy()
    np.testing.assert_allclose(got, max_pool_ceil_reference(x, size, stride), rtol=1e-6)
    assert tuple(layer.compute_output_shape(shape)) == got.shape


def test_lrn_output_channels_normalise_across_all_and_keep_a_slice():
    a = np.random.default_rng(1).normal(0.0, 30.0, size=(2, 3, 3, 12)).astype(np.float32)
    full = lrn_reference(a, k=1.0, alpha=1e-2)
    for begin, end in ((0, 6), (6, 12)):
        layer = LocalResponseNormalization(k=1.0, alpha=1e-2, output_channels=(begin, end))
        np.testing.assert_allclose(layer(a).numpy(), full[..., begin:end], rtol=1e-5)
