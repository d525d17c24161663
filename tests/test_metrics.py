"""Counting errors: ten-crop and ensemble averaging, top-k, against hand-computed numbers."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import evaluate, metrics


def test_ten_crop_and_ensemble_arithmetic():
    inputs = keras.Input((4, 4, 3))
    logits = keras.layers.Dense(3, kernel_initializer="ones")(
        keras.layers.GlobalAveragePooling2D()(inputs))
    model = keras.Model(inputs, logits)
    rng = np.random.default_rng(0)
    crops = rng.normal(size=(2, 10, 4, 4, 3)).astype(np.float32) * [1.0, 2.0, 3.0]
    dataset = tf.data.Dataset.from_tensor_slices((crops, np.array([0, 2]))).batch(2)
    probs, labels = evaluate.probabilities(model, dataset, ten_crop=True)
    # numpy: softmax of each crop's logits, averaged over the ten crops.
    crop_logits = crops.mean(axis=(2, 3)) @ np.ones((3, 3))
    soft = np.exp(crop_logits - crop_logits.max(-1, keepdims=True))
    soft /= soft.sum(-1, keepdims=True)
    np.testing.assert_allclose(probs, soft.mean(axis=1), rtol=1e-5)
    assert list(labels) == [0, 2]

    # Errors by hand: image 0 is right at top-1; image 1's label is second.
    p = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]])
    assert metrics.error_rates(p, np.array([0, 1])) == {"top1_error": 0.5, "top5_error": 0.0,
                                                         "examples": 2}
    # An ensemble averages softmaxes: two models wrong alone, right together.
    a, b = np.array([[0.45, 0.55, 0.0]]), np.array([[0.9, 0.0, 0.1]])
    assert metrics.error_rates(a, np.array([0]))["top1_error"] == 1.0
    assert metrics.error_rates((a + b) / 2, np.array([0]))["top1_error"] == 0.0
    np.testing.assert_allclose(metrics.ensemble_probabilities([a, b]), (a + b) / 2)


def test_cross_entropy_is_the_mean_negative_log_softmax_over_the_global_batch():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]], np.float32)
    labels = np.array([0, 2])
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -(log_softmax[0, 0] + log_softmax[1, 2]) / 4      # global batch of 4
    assert float(metrics.cross_entropy(labels, logits, 4)) == pytest.approx(expected, rel=1e-6)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
