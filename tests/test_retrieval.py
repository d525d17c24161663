"""Retrieval: nearest neighbours by Euclidean distance, and the on-disk index."""

import numpy as np

from alexnet_tf import retrieval


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


def test_index_is_reused_only_for_the_same_model_and_data(tmp_path):
    path = str(tmp_path / "sub" / "index.npz")
    features, labels = np.ones((4, 3), np.float32), np.arange(4)
    meta = {"model": "/exports/1", "dataset": "d", "split": "train", "examples": 4}
    assert retrieval.load_index(path, meta) is None
    retrieval.save_index(path, features, labels, meta)
    loaded = retrieval.load_index(path, dict(meta))
    np.testing.assert_array_equal(loaded[0], features)
    np.testing.assert_array_equal(loaded[1], labels)
    assert retrieval.load_index(path, {**meta, "model": "/exports/2"}) is None
