"""Image retrieval by fc7 features (the paper's section 6.1, figure 4 right).

An index holds the 4096-d fc7 activation of every image of a dataset split,
saved to disk (`.npz`, written atomically) so that queries reuse it. The
neighbours of a query are the indexed images with the smallest Euclidean
distance between feature vectors.
"""

import io
import json
import os
import zipfile

import numpy as np
import tensorflow as tf

from alexnet_tf import files, hardware
from alexnet_tf.data import sources

NEIGHBOURS = 6   # figure 4 (right) shows the six nearest training images per query
# An index computed in another precision is reused when these first images of its split agree.
AGREEMENT_IMAGES = 16


def build_index(features_fn, source, split, batch_size=32):
    """(features float32 [N, D], labels int64 [N]) of every image of `split`, in stored order.

    Args:
      features_fn: The `features` signature: called as features_fn(image_bytes=[B] strings),
        returns {"features": [B, D]}.
    """
    features, labels = [], []
    for encoded, label in source.encoded(split).batch(batch_size).prefetch(2):
        features.append(features_fn(image_bytes=encoded)["features"].numpy())
        labels.append(label.numpy())
    if not features:
        raise sources.DataError(f"split {split!r} of {source.name} has no images to index")
    return np.concatenate(features).astype(np.float32), np.concatenate(labels).astype(np.int64)


def save_index(path, features, labels, meta):
    """Writes the index atomically; `meta` (a JSON-able dict) says what it was built from."""
    buffer = io.BytesIO()
    np.savez(buffer, features=features, labels=labels, meta=np.array(json.dumps(meta, sort_keys=True)))
    files.atomic_write(path, buffer.getvalue())


def feature_disagreement(features_fn, source, split, features, count=AGREEMENT_IMAGES):
    """The largest relative distance |now - stored| / |stored| between `features` (an index's
    rows, in the split's stored order) and what `features_fn` computes for the first `count`
    images of `split`."""
    encoded = next(iter(source.encoded(split).take(count).batch(count)))[0]
    now = features_fn(image_bytes=encoded)["features"].numpy().astype(np.float64)
    stored = np.asarray(features[:len(now)], np.float64)
    norms = np.maximum(np.linalg.norm(stored, axis=1), np.finfo(np.float32).tiny)
    return float(np.max(np.linalg.norm(now - stored, axis=1) / norms))


def load_index(path, meta, features_fn=None, source=None):
    """((features, labels), note) if the index at `path` serves `meta`, else (None, why it must
    be built: one line).

    It serves when built from the same weights, dataset, split and size. Built in another
    precision, it serves if `features_fn` (given with `source`) computes features of its first
    AGREEMENT_IMAGES images within `hardware.tolerance("features", ...)` of the stored ones; the
    note then says so (else note is None)."""
    if not os.path.exists(path):
        return None, f"there is no index at {path} yet"
    try:
        with np.load(path, allow_pickle=False) as data:
            saved = json.loads(str(data["meta"]))
            features, labels = data["features"], data["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        return None, f"the index at {path} cannot be read ({str(error)[:80]})"
    meta = json.loads(json.dumps(meta, sort_keys=True))
    weights = meta.get("weights_sha1")
    if weights is None or saved.get("weights_sha1") != weights:
        return None, (f"the index at {path} was built from other weights (from "
                      f"{saved.get('source', 'an unknown model')})" if weights else
                      "the export does not record which weights it holds")
    saved.setdefault("precision", "float32")       # indexes of before computed in float32
    meta.setdefault("precision", "float32")
    for key in ("dataset", "split", "examples"):
        if saved.get(key) != meta.get(key):
            return None, (f"the index at {path} was built with {key} {saved.get(key)}, not "
                          f"{meta.get(key)}")
    if saved["precision"] == meta["precision"]:
        return (features, labels), None
    mismatch = (f"the index at {path} was computed in {saved['precision']}, this model computes "
                f"in {meta['precision']}")
    if features_fn is None:
        return None, mismatch
    bound = hardware.tolerance("features", saved["precision"], meta["precision"])
    worst = feature_disagreement(features_fn, source, meta["split"], features)
    if worst > bound:
        return None, (f"{mismatch}, and their features differ by up to {worst:.3g} of their "
                      f"length (more than {bound:g})")
    return (features, labels), (f"{mismatch}; reusing it: the features of its first "
                                f"{AGREEMENT_IMAGES} images agree within {worst:.3g} of their "
                                f"length (at most {bound:g})")


def nearest(index, queries, k=NEIGHBOURS):
    """The k indexed rows nearest each query by Euclidean distance.

    Args:
      index: [N, D] features.
      queries: [Q, D] features.

    Returns:
      (positions int64 [Q, k], distances float64 [Q, k]), nearest first; ties keep index order.
    """
    index, queries = np.asarray(index, np.float64), np.asarray(queries, np.float64)
    squared = (np.sum(queries ** 2, 1)[:, None] - 2 * queries @ index.T
               + np.sum(index ** 2, 1)[None, :])
    k = min(k, len(index))
    order = np.argsort(squared, axis=1, kind="stable")[:, :k]
    distances = np.sqrt(np.maximum(np.take_along_axis(squared, order, 1), 0.0))
    return order.astype(np.int64), distances


def encoded_at(source, split, positions):
    """The encoded images at `positions` of `split` (stored order), in the order asked."""
    wanted = sorted(set(int(p) for p in positions))
    found = {}
    table = tf.constant(wanted, tf.int64)
    ds = source.encoded(split).enumerate()
    ds = ds.filter(lambda i, example: tf.reduce_any(tf.equal(table, i)))
    for i, (encoded, _) in ds.as_numpy_iterator():
        found[int(i)] = encoded
        if len(found) == len(wanted):
            break
    return [found[int(p)] for p in positions]
