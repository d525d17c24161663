"""The paper's preprocessing and augmentation against numpy references."""

import sys

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.data import preprocessing


def position_image(height, width):
    """Each pixel encodes its own (row, column) so crops can be located exactly."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.float32)


@pytest.mark.parametrize("shape,expected", [((300, 400), (256, 341)), ((400, 300), (341, 256)),
                                            ((100, 50), (512, 256)), ((256, 256), (256, 256))])
def test_resize_shorter_side(shape, expected):
    image = tf.zeros(shape + (3,), tf.uint8)
    assert tuple(preprocessing.resize_shorter_side(image, 256).shape[:2]) == expected


def test_strong_downscaling_is_antialiased():
    # A 1-pixel checkerboard shrunk 4x: antialiasing averages it to grey (127.5); plain
    # bilinear sampling would land on single pixels and keep 0/255 values.
    board = (np.indices((1024, 1024)).sum(0) % 2 * 255).astype(np.float32)
    image = np.repeat(board[..., None], 3, axis=-1)
    out = preprocessing.resize_shorter_side(image, 256).numpy()
    assert out.shape == (256, 256, 3)
    np.testing.assert_allclose(out[8:-8, 8:-8], 127.5, atol=2.0)


def test_resize_of_a_256_image_is_the_identity():
    image = np.random.default_rng(0).integers(0, 256, (256, 300, 3)).astype(np.uint8)
    out = preprocessing.resize_shorter_side(image, 256).numpy()
    assert out.shape == (256, 300, 3)
    np.testing.assert_allclose(out, image.astype(np.float32), atol=1e-3)


def test_decode_256_of_a_lossless_image():
    image = np.random.default_rng(1).integers(0, 256, (256, 320, 3)).astype(np.uint8)
    out = preprocessing.decode_256(tf.io.encode_png(image)).numpy()
    assert out.shape == (256, 256, 3)
    np.testing.assert_allclose(out, image[:, 32:288].astype(np.float32), atol=1e-3)


def test_random_crop_and_flip_is_a_window_and_deterministic():
    image = tf.constant(position_image(256, 256))
    tops, lefts, flips = [], [], []
    for i in range(300):
        seed = tf.constant([7, i], tf.int64)
        out = preprocessing.random_crop_and_flip(image, seed).numpy()
        np.testing.assert_array_equal(out, preprocessing.random_crop_and_flip(image, seed).numpy())
        flipped = out[0, 0, 1] > out[0, -1, 1]
        view = out[:, ::-1] if flipped else out
        top, left = int(view[0, 0, 0]), int(view[0, 0, 1])
        np.testing.assert_array_equal(view, position_image(256, 256)[top:top + 224, left:left + 224])
        tops.append(top), lefts.append(left), flips.append(flipped)
    assert min(tops) >= 0 and max(tops) <= 32 and min(lefts) >= 0 and max(lefts) <= 32
    assert len(set(tops)) > 20 and len(set(lefts)) > 20        # every offset 0..32 is possible
    assert 0.4 < np.mean(flips) < 0.6                          # reflection with probability 1/2


def test_pca_offsets_have_the_predicted_covariance():
    rng = np.random.default_rng(2)
    eigenvectors, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    eigenvalues = np.array([0.2, 0.02, 0.005])
    draws = 20000
    offsets = tf.function(lambda seeds: tf.map_fn(
        lambda s: preprocessing.pca_offset(s, eigenvalues, eigenvectors), seeds,
        fn_output_signature=tf.float32))(tf.stack([tf.zeros(draws, tf.int64),
                                                   tf.range(draws, dtype=tf.int64)], 1)).numpy()
    # offset = P diag(l) a with a ~ N(0, 0.1^2 I)  =>  Cov = 0.01 * P diag(l^2) P^T, mean 0.
    predicted = 0.01 * eigenvectors @ np.diag(eigenvalues ** 2) @ eigenvectors.T
    np.testing.assert_allclose(np.cov(offsets.T), predicted, atol=0.05 * predicted.max())
    assert np.all(np.abs(offsets.mean(0)) < 4 * np.sqrt(np.diag(predicted) / draws))
    # The offset is the same for every pixel of an image: it is one [3] vector.
    assert offsets.shape == (draws, 3)


def test_ten_crops_are_corners_centre_and_their_mirrors():
    image = position_image(256, 256)
    crops = preprocessing.ten_crops(tf.constant(image)).numpy()
    assert crops.shape == (10, 224, 224, 3)
    offsets = [(0, 0), (0, 32), (32, 0), (32, 32), (16, 16)]
    assert preprocessing.ten_crop_offsets(256, 256) == offsets
    for i, (top, left) in enumerate(offsets):
        patch = image[top:top + 224, left:left + 224]
        np.testing.assert_array_equal(crops[i], patch)
        np.testing.assert_array_equal(crops[i + 5], patch[:, ::-1])


def test_centre_crop():
    image = position_image(256, 256)
    np.testing.assert_array_equal(preprocessing.centre_crop(tf.constant(image)).numpy(),
                                  image[16:240, 16:240])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
