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
