"""RandAugment's operations against numpy, its draws from a stateless seed, and its place in the
training pipeline (a resumed epoch augments alike)."""

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.data import dataset_stats, input_pipeline, sources
from alexnet_tf.data.randaugment import OPS, apply_op, rand_augment

IMAGE = np.random.default_rng(0).uniform(0, 255, (12, 20, 3)).astype(np.float32)


def op(name, m, sign=1.0, image=IMAGE):
    return apply_op(tf.constant(OPS.index(name)), tf.constant(image), tf.constant(m),
                    tf.constant(sign)).numpy()


def grey(image):
    return (image * np.array([0.299, 0.587, 0.114])).sum(-1, keepdims=True)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_the_photometric_operations_by_numpy(sign):
    m = 0.5
    f = 1 + sign * 0.9 * m
    expected = {
        "identity": IMAGE,
        "brightness": np.clip(IMAGE * f, 0, 255),
        "color": np.clip(grey(IMAGE) + f * (IMAGE - grey(IMAGE)), 0, 255),
        "contrast": np.clip(grey(IMAGE).mean() + f * (IMAGE - grey(IMAGE).mean()), 0, 255),
        "solarize": np.where(IMAGE >= 128, 255 - IMAGE, IMAGE),
        "posterize": (np.round(IMAGE).astype(np.int64) >> 2 << 2).astype(np.float32),
        "autocontrast": (IMAGE - IMAGE.min((0, 1))) * 255 / (IMAGE.max((0, 1)) - IMAGE.min((0, 1))),
    }
    for name, want in expected.items():
        np.testing.assert_allclose(op(name, m, sign), want, rtol=1e-5, atol=1e-3, err_msg=name)


def test_the_geometric_operations_move_pixels_as_stated():
    # translate_x at m = 2 / 9: 0.45 m x 20 = 2 pixels; output x reads input x + 2.
    moved = op("translate_x", 2.0 / 9.0, 1.0)
    np.testing.assert_allclose(moved[:, :18], IMAGE[:, 2:], atol=1e-3)
    np.testing.assert_allclose(moved[:, 18:], 128.0)
    moved = op("translate_y", 0.45 ** -1 * 3.0 / 12.0, -1.0)       # 3 rows the other way
    np.testing.assert_allclose(moved[3:], IMAGE[:9], atol=1e-3)
    np.testing.assert_allclose(moved[:3], 128.0)
    for name in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y"):
        np.testing.assert_allclose(op(name, 0.0), IMAGE, atol=1e-3, err_msg=name)   # m = 0
        turned = op(name, 1.0)
        assert turned.shape == IMAGE.shape and 0 <= turned.min() and turned.max() <= 255
        assert not np.allclose(turned, IMAGE), name


def test_rand_augment_draws_from_its_seed_alone():
    image = tf.constant(IMAGE)
    a = rand_augment(image, tf.constant([1, 2], tf.int64), 2, 9).numpy()
    np.testing.assert_array_equal(a, rand_augment(image, tf.constant([1, 2], tf.int64), 2, 9))
    outputs = {rand_augment(image, tf.constant([1, s], tf.int64), 2, 9).numpy().tobytes()
               for s in range(12)}
    assert len(outputs) >= 6                    # the ops differ from seed to seed


def test_the_pipeline_augments_each_image_from_its_seed(tiny_data_dir):
    tiny = sources.open_source("alexnet_shapes/tiny", tiny_data_dir)
    stats = dataset_stats.Normalization(dataset_stats.stats_for(tiny))
    make = lambda **kw: input_pipeline.train_dataset(tiny, stats, 8, seed=4, **kw)  # noqa: E731
    plain = [b[0].numpy() for b in make().take(2)]
    augmented = [b[0].numpy() for b in make(randaugment=(2, 9.0)).take(2)]
    assert not np.array_equal(plain[0], augmented[0])
    resumed = next(iter(make(randaugment=(2, 9.0), skip_batches=1)))[0].numpy()
    np.testing.assert_array_equal(resumed, augmented[1])
