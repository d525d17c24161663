"""Training-set statistics against numpy, stored beside the data."""

import os
import sys

import numpy as np
import pytest

from alexnet_tf.data import dataset_stats, preprocessing, sources


@pytest.fixture(scope="module")
def tiny(tiny_data_dir):
    return sources.open_source("alexnet_shapes/tiny", tiny_data_dir)


def test_stats_match_numpy_and_are_stored_beside_the_data(tiny):
    stats = dataset_stats.stats_for(tiny)
    images = np.stack([preprocessing.decode_256(x).numpy()
                       for x, _ in tiny.encoded("train").as_numpy_iterator()]).astype(np.float64)
    assert stats.num_images == 80
    np.testing.assert_allclose(stats.mean_image, images.mean(0), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(stats.mean_channel, images.mean((0, 1, 2)), rtol=1e-5)
    covariance = np.cov((images / 255.0).reshape(-1, 3).T, bias=True)
    np.testing.assert_allclose(stats.eigenvectors @ np.diag(stats.eigenvalues) @ stats.eigenvectors.T,
                               covariance, rtol=1e-4, atol=1e-7)
    assert list(stats.eigenvalues) == sorted(stats.eigenvalues, reverse=True)
    # Stored beside the dataset, no temporary files left, and loaded back identical.
    files = set(os.listdir(tiny.stats_dir))
    assert {"alexnet_tf_stats.json", "alexnet_tf_mean_image.npy"} <= files
    assert not [f for f in files if f.startswith(".tmp-")]
    loaded = dataset_stats.load_stats(tiny.stats_dir)
    np.testing.assert_array_equal(loaded.mean_image, stats.mean_image)
    np.testing.assert_array_equal(loaded.eigenvectors, stats.eigenvectors)


def test_pca_offset_at_a_fixed_seed_is_the_papers_formula_in_pixel_units():
    """Section 4.1: [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T, eigenvectors as columns, a_i ~ N(0, 0.1),
    eigenvalues of RGB in [0, 1], so x 255 to add to 0..255 pixels. The a_i are TF's draws."""
    import tensorflow as tf
    rng = np.random.default_rng(3)
    eigenvectors, _ = np.linalg.qr(rng.normal(size=(3, 3)))      # not symmetric: P != P^T
    eigenvalues = np.array([0.2, 0.02, 0.005])
    stats = dataset_stats.Stats(np.zeros((256, 256, 3), np.float32), np.zeros(3, np.float32),
                                eigenvalues.astype(np.float32), eigenvectors.astype(np.float32),
                                num_images=1)
    seed = tf.constant([7, 11], tf.int64)
    alphas = tf.random.stateless_normal([3], seed=seed, stddev=0.1).numpy().astype(np.float64)
    expected = 255.0 * eigenvectors @ (alphas * eigenvalues)
    offset = dataset_stats.Normalization(stats).pca_offset(seed).numpy()
    np.testing.assert_allclose(offset, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(offset, 255.0 * eigenvectors.T @ (alphas * eigenvalues), atol=1e-3)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
