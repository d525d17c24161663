"""The built-in dataset: deterministic, a real shape task, no colour shortcut."""

import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from alexnet_tf.data import shapes_dataset


def test_generation_is_deterministic_and_sized():
    first = list(shapes_dataset.generate("train", per_class=1, threads=1))
    second = list(shapes_dataset.generate("train", per_class=1, threads=3))  # painted in parallel
    assert [label for _, _, label in first] == list(range(10))
    assert [key for key, _, _ in second] == list(range(10))    # in order, whatever the threads
    for (_, a, _), (_, b, _) in zip(first, second):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
        assert min(a.shape[:2]) >= 256
    val = next(shapes_dataset.generate("validation", per_class=1))[1]
    assert not np.array_equal(val, first[0][1])  # the splits are different images


def test_every_class_draws_a_distinct_shape():
    y, x = np.mgrid[-1.2:1.2:200j, -1.2:1.2:200j]
    masks = {name: shape_mask for name in shapes_dataset.CLASS_NAMES
             for shape_mask in [shapes_dataset.shape_mask(name, x, y)]}
    for name, mask in masks.items():
        assert 0.1 < mask.mean() < 0.7, name                   # a real shape, not empty or full
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            overlap = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
            assert overlap < 0.9, (a, b)   # distinct masks (circle vs square, the closest: 0.83)


def colour_neighbour_accuracy(images, labels):
    """1-nearest-neighbour accuracy on per-channel means and contrast (standardised).

    Neighbours come from the first half of the images, accuracy from the second;
    both halves hold every class (the images come class by class, round by round).
    One neighbour, not a class centroid: with dark and light images in every
    class, a class's colours form several clusters whose mean says little.
    """
    features = np.asarray([[*im.mean(axis=(0, 1)), im.std()] for im in images])
    labels = np.asarray(labels)
    features = (features - features.mean(0)) / features.std(0)
    train = np.arange(len(labels)) < len(labels) // 2
    test = ~train
    assert set(labels[train]) == set(labels[test]) == set(range(10))
    distances = ((features[test][:, None] - features[train][None]) ** 2).sum(-1)
    predicted = labels[train][np.argmin(distances, axis=1)]
    return np.mean(predicted == labels[test])


@pytest.fixture(scope="module")
def drawn():
    """24 rounds of the ten classes: each image's random choices (`draw`) and its label."""
    rng = np.random.default_rng(11)
    return [(shapes_dataset.draw(name, rng), label)
            for _ in range(24) for label, name in enumerate(shapes_dataset.CLASS_NAMES)]


def test_colour_statistics_do_not_separate_the_classes(drawn):
    images = [shapes_dataset.paint(d).astype(np.float64) for d, _ in drawn]
    accuracy = colour_neighbour_accuracy(images, [label for _, label in drawn])
    assert accuracy < 0.22, accuracy   # chance is 0.10; 120 test images


def test_the_colour_check_catches_a_colour_coded_variant(drawn):
    # The same images, but each class's background in a hue of its own (as dark or light
    # as drawn): colour now gives the class away, and the check above must see it.
    palette = np.random.default_rng(5).random((10, 3))
    images = []
    for d, label in drawn:
        dark = d["background"].max() <= 0.4
        images.append(shapes_dataset.paint(
            {**d, "background": palette[label] * 0.4 + (0.0 if dark else 0.6)}).astype(np.float64))
    assert colour_neighbour_accuracy(images, [label for _, label in drawn]) > 0.5


def test_registered_with_tfds(tiny_data_dir):
    builder = tfds.builder("alexnet_shapes/tiny", data_dir=tiny_data_dir)
    assert builder.info.splits["train"].num_examples == 80
    assert builder.info.splits["validation"].num_examples == 40
    assert builder.info.features["label"].names == list(shapes_dataset.CLASS_NAMES)
    example = next(iter(builder.as_dataset(split="train").take(1)))
    assert example["image"].shape[2] == 3 and min(example["image"].shape[:2]) >= 256


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
