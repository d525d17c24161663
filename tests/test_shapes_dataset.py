"""The built-in dataset: deterministic, a real shape task, no colour shortcut."""

import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from alexnet_tf import shapes_dataset


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


def test_colour_statistics_do_not_separate_the_classes():
    rng = np.random.default_rng(11)
    features, labels = [], []
    for _ in range(24):
        for label, name in enumerate(shapes_dataset.CLASS_NAMES):
            image = shapes_dataset.render(name, rng).astype(np.float64)
            features.append([*image.mean(axis=(0, 1)), image.mean(), image.std()])
            labels.append(label)
    features, labels = np.asarray(features), np.asarray(labels)
    features = (features - features.mean(0)) / features.std(0)
    train, test = np.arange(len(labels)) % 2 == 0, np.arange(len(labels)) % 2 == 1
    # Nearest class centroid on per-channel means, brightness and contrast.
    centroids = np.stack([features[train & (labels == c)].mean(0) for c in range(10)])
    predicted = np.argmin(((features[test][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    accuracy = np.mean(predicted == labels[test])
    assert accuracy < 0.22, accuracy   # chance is 0.10; 120 test images


def test_registered_with_tfds(tiny_data_dir):
    builder = tfds.builder("alexnet_shapes/tiny", data_dir=tiny_data_dir)
    assert builder.info.splits["train"].num_examples == 80
    assert builder.info.splits["validation"].num_examples == 40
    assert builder.info.features["label"].names == list(shapes_dataset.CLASS_NAMES)
    example = next(iter(builder.as_dataset(split="train").take(1)))
    assert example["image"].shape[2] == 3 and min(example["image"].shape[:2]) >= 256


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
