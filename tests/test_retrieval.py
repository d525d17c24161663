"""Retrieval: nearest neighbours by Euclidean distance, and the on-disk index."""

import numpy as np
import tensorflow as tf

from alexnet_tf.analysis import retrieval


def test_nearest_matches_brute_force_euclidean_distance():
    rng = np.random.default_rng(0)
    index = rng.normal(size=(50, 16)).astype(np.float32)
    queries = np.concatenate([index[[7, 31]] + 1e-4, rng.normal(size=(3, 16))]).astype(np.float32)
    positions, distances = retrieval.nearest(index, queries, k=6)
    for q, query in enumerate(queries):
        brute = [np.sqrt(np.sum((row.astype(np.float64) - query) ** 2)) for row in index]
        order = np.argsort(brute, kind="stable")[:6]
        np.testing.assert_array_equal(positions[q], order)
        np.testing.assert_allclose(distances[q], np.array(brute)[order], rtol=1e-6, atol=1e-6)
    assert positions[0, 0] == 7 and positions[1, 0] == 31     # an image's duplicate comes first


def test_index_is_reused_only_for_the_same_weights_and_data_and_says_why_not(tmp_path):
    path = str(tmp_path / "sub" / "index.npz")
    features, labels = np.ones((4, 3), np.float32), np.arange(4)
    meta = {"source": "/runs/a/ckpt-30", "weights_sha1": "ab" * 20, "dataset": "d",
            "split": "train", "examples": 4}
    assert retrieval.load_index(path, meta) == (None, f"there is no index at {path} yet")
    retrieval.save_index(path, features, labels, meta)
    # The same weights reached another way (the run's export): reused.
    (loaded_features, loaded_labels), why = retrieval.load_index(
        path, {**meta, "source": "/savedmodel/alexnet/1"})
    assert why is None
    np.testing.assert_array_equal(loaded_features, features)
    np.testing.assert_array_equal(loaded_labels, labels)
    index, why = retrieval.load_index(path, {**meta, "weights_sha1": "cd" * 20})
    assert index is None and why == (f"the index at {path} was built from other weights (from "
                                     "/runs/a/ckpt-30)")
    index, why = retrieval.load_index(path, {**meta, "examples": 5})
    assert index is None and why == f"the index at {path} was built with examples 4, not 5"
    index, why = retrieval.load_index(path, {**meta, "weights_sha1": None})
    assert index is None and "does not record which weights" in why
    open(path, "wb").write(b"PK\x03\x04 damaged")
    index, why = retrieval.load_index(path, meta)
    assert index is None and why.startswith(f"the index at {path} cannot be read")


class _Source:
    """A split of 20 encoded images, as sources.Source.encoded gives them (bytes, label)."""

    def encoded(self, split):
        names = tf.constant([f"image{i}".encode() for i in range(20)])
        return tf.data.Dataset.from_tensor_slices((names, tf.range(20, dtype=tf.int64)))


def test_an_index_of_another_precision_is_reused_only_when_its_features_agree(tmp_path):
    """The rule of hardware.AGREEMENT, applied to the first AGREEMENT_IMAGES images: relative
    distances |now - stored| / |stored| by hand against the bfloat16/float32 bound (3e-2)."""
    path = str(tmp_path / "index.npz")
    rng = np.random.default_rng(4)
    stored = rng.uniform(0.5, 2.0, (20, 8)).astype(np.float32)
    meta = {"source": "/exports/1", "weights_sha1": "ab" * 20, "dataset": "d", "split": "train",
            "examples": 20, "precision": "float32"}
    retrieval.save_index(path, stored, np.arange(20), meta)
    run = {**meta, "source": "/runs/a/ckpt-4", "precision": "bfloat16"}
    noise = rng.normal(size=stored.shape)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)

    def computed(relative, row=None):
        """features_fn whose features are the stored ones moved by `relative` of their length
        (in one row only, if `row` is given); asked for the first 16 images in order."""
        def features_fn(image_bytes):
            positions = [int(name.decode()[5:]) for name in image_bytes.numpy()]
            assert positions == list(range(retrieval.AGREEMENT_IMAGES))
            moved = stored + relative * np.linalg.norm(stored, axis=1, keepdims=True) * noise
            if row is not None:
                moved = np.where(np.arange(20)[:, None] == row, moved, stored)
            return {"features": tf.constant(moved[positions])}
        return features_fn

    index, why = retrieval.load_index(path, run)                # nothing to compare with
    assert index is None and why == (f"the index at {path} was computed in float32, this model "
                                     "computes in bfloat16")
    index, why = retrieval.load_index(path, run, computed(0.02), _Source())
    np.testing.assert_array_equal(index[0], stored)
    assert why.endswith("reusing it: the features of its first 16 images agree within 0.02 of "
                        "their length (at most 0.03)"), why
    index, why = retrieval.load_index(path, run, computed(0.04, row=15), _Source())
    assert index is None and why.endswith("differ by up to 0.04 of their length (more than "
                                          "0.03)"), why
    # A difference past the first 16 images is not looked at; float32 against float32 is exact.
    assert retrieval.load_index(path, run, computed(0.5, row=16), _Source())[0] is not None
    index, why = retrieval.load_index(path, {**run, "precision": "float32"},
                                      computed(0.5), _Source())
    assert index is not None and why is None
