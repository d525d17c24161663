"""Counting errors: ten-crop and ensemble averaging, top-k, against hand-computed numbers."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import metrics
from alexnet_tf.analysis import evaluate
from alexnet_tf.data import preprocessing


def numpy_ten_crops(image, size):
    """The paper's ten patches, by hand: four corners and the centre, then their mirror images."""
    height, width = image.shape[:2]
    corners = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size),
               ((height - size) // 2, (width - size) // 2)]
    patches = [image[top:top + size, left:left + size] for top, left in corners]
    return patches + [patch[:, ::-1] for patch in patches]


def test_ten_crop_averages_the_softmax_of_the_papers_ten_patches():
    """Each crop gets a different softmax (a position-sensitive linear model), so taking the
    wrong patches, flipping the wrong way or not averaging changes the result."""
    rng = np.random.default_rng(0)
    size, classes = 4, 3
    inputs = keras.Input((size, size, 3))
    dense = keras.layers.Dense(classes)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    kernel = rng.normal(size=(size * size * 3, classes)).astype(np.float32)
    bias = np.array([0.1, -0.2, 0.3], np.float32)
    dense.set_weights([kernel, bias])
    images = rng.normal(size=(2, 7, 6, 3)).astype(np.float32)        # not square: 7 x 6
    crops = tf.stack([preprocessing.ten_crops(tf.constant(image), size) for image in images])
    dataset = tf.data.Dataset.from_tensor_slices((crops, np.array([0, 2]))).batch(2)
    probs, labels = evaluate.probabilities(model, dataset, ten_crop=True)
    expected = []
    for image in images:
        logits = np.stack([p.reshape(-1) @ kernel + bias for p in numpy_ten_crops(image, size)])
        soft = np.exp(logits - logits.max(-1, keepdims=True))
        soft /= soft.sum(-1, keepdims=True)
        assert soft.std(axis=0).max() > 0.05                     # the crops really differ
        expected.append(soft.mean(axis=0))
    np.testing.assert_allclose(probs, np.array(expected), rtol=1e-5, atol=1e-6)
    assert list(labels) == [0, 2]


def test_top_k_counting_and_ensemble_arithmetic():
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


def test_label_smoothing_and_class_weights_change_the_loss_as_stated():
    """e = 0.1 over 3 classes: the label's target 0.9 + 0.1 / 3, the others 0.1 / 3; a class's
    weight multiplies its examples' losses; the sum is still divided by the global batch."""
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]], np.float32)
    labels = np.array([0, 2])
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    targets = np.full((2, 3), 0.1 / 3)
    targets[0, 0] += 0.9
    targets[1, 2] += 0.9
    smoothed = -(targets * log_softmax).sum(1)
    assert float(metrics.cross_entropy(labels, logits, 4, label_smoothing=0.1)) == \
        pytest.approx(smoothed.sum() / 4, rel=1e-6)
    weights = np.array([0.5, 7.0, 3.0], np.float32)
    plain = -np.array([log_softmax[0, 0], log_softmax[1, 2]])
    assert float(metrics.cross_entropy(labels, logits, 4, class_weights=weights)) == \
        pytest.approx((0.5 * plain[0] + 3.0 * plain[1]) / 4, rel=1e-6)
    assert float(metrics.cross_entropy(labels, logits, 4, 0.1, weights)) == \
        pytest.approx((0.5 * smoothed[0] + 3.0 * smoothed[1]) / 4, rel=1e-6)


def test_balanced_class_weights_from_counts_by_hand():
    # 30 + 10 + 0 + 200 = 240 images, 4 classes: 240 / (4 x count).
    np.testing.assert_allclose(metrics.balanced_class_weights([30, 10, 0, 200]),
                               [2.0, 6.0, 0.0, 0.3], rtol=1e-6)
    # Each class's images then weigh 60 together (the class with none, nothing).
    np.testing.assert_allclose(metrics.balanced_class_weights([30, 10, 0, 200]) *
                               np.array([30, 10, 0, 200]), [60, 60, 0, 60], rtol=1e-6)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
