"""The numbers the paper reports and how they are counted, in one place.

Training (its loss and validation), `alexnet-eval` and the served graph all
call these: the loss, top-1 / top-5 misses, the softmax averaged over the ten
crops (section 4.1) and over an ensemble's members (section 6).
"""

import numpy as np
import tensorflow as tf


def cross_entropy(labels, logits, global_batch_size, label_smoothing=0.0, class_weights=None):
    """Softmax cross-entropy summed over the replica's batch, divided by the global batch.

    Args:
      label_smoothing: e: the target is (1 - e) x the label's one-hot + e / classes.
      class_weights: None, or float32 [classes]: each example's loss times its class's weight.
    """
    logits = tf.cast(logits, tf.float32)
    if label_smoothing:
        classes = logits.shape[-1]
        targets = tf.one_hot(labels, classes) * (1.0 - label_smoothing) + label_smoothing / classes
        per_example = tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    else:
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    if class_weights is not None:
        per_example = per_example * tf.gather(tf.constant(class_weights, tf.float32), labels)
    return tf.reduce_sum(per_example) / global_batch_size


def balanced_class_weights(counts):
    """--class_weights=balanced: class c weighs N / (classes x N_c), so every class's images
    together weigh the same (a class with no image weighs 0)."""
    counts = np.asarray(counts, np.float64)
    weights = np.divide(counts.sum(), len(counts) * counts, out=np.zeros_like(counts),
                        where=counts > 0)
    return weights.astype(np.float32)


def top_k_errors(labels, scores):
    """Counts of top-1 and top-5 misses in a batch (float32 scalars)."""
    scores = tf.cast(scores, tf.float32)
    k5 = min(5, scores.shape[-1])
    miss1 = tf.logical_not(tf.math.in_top_k(labels, scores, 1))
    miss5 = tf.logical_not(tf.math.in_top_k(labels, scores, k5))
    return tf.reduce_sum(tf.cast(miss1, tf.float32)), tf.reduce_sum(tf.cast(miss5, tf.float32))


def probabilities(logits):
    """The float32 softmax of logits (of any compute precision)."""
    return tf.nn.softmax(tf.cast(logits, tf.float32))


def crop_averaged_probabilities(model, crops):
    """Section 4.1's test: the softmax averaged over each image's crops.

    Args:
      model: Images [N, S, S, 3] -> logits.
      crops: [B, n, S, S, 3], n crops of each of B images (ten in the paper).

    Returns:
      float32 [B, classes].
    """
    shape = tf.shape(crops)
    flat = tf.reshape(crops, tf.concat([[-1], shape[2:]], 0))
    probs = probabilities(model(flat, training=False))
    return tf.reduce_mean(tf.reshape(probs, [shape[0], shape[1], -1]), axis=1)


def ensemble_probabilities(members):
    """Section 6: an ensemble's prediction, the mean of its members' softmax [N, C] arrays."""
    return np.mean(members, axis=0)


def error_rates(probs, labels):
    """Top-1 and top-5 error of probabilities [N, C] against labels [N], counted as training's
    validation counts them (`top_k_errors`)."""
    miss1, miss5 = top_k_errors(tf.constant(labels, tf.int64), tf.constant(probs))
    n = int(len(labels))
    return {"top1_error": float(miss1) / max(n, 1), "top5_error": float(miss5) / max(n, 1),
            "examples": n}


def confusion_matrix(predicted, labels, num_classes):
    """int64 [C, C]: entry (t, p) counts images of class t predicted p (top-1)."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix


def dataset_metrics(logits_fn, dataset):
    """Mean loss and top-1 / top-5 error of `logits_fn` over (images, labels) batches.

    Also "confusion": int64 [C, C], images of class t (row) predicted p (column).
    """
    loss, miss1, miss5, count, confusion = 0.0, 0.0, 0.0, 0, 0
    for images, labels in dataset:
        logits = logits_fn(images)
        n = int(labels.shape[0])
        loss += float(cross_entropy(labels, logits, 1.0))
        m1, m5 = top_k_errors(labels, logits)
        miss1, miss5, count = miss1 + float(m1), miss5 + float(m5), count + n
        confusion = confusion + confusion_matrix(np.argmax(logits.numpy(), axis=-1),
                                                 labels.numpy(), logits.shape[-1])
    count = max(count, 1)
    return {"loss": loss / count, "top1_error": miss1 / count, "top5_error": miss5 / count,
            "examples": count, "confusion": confusion if np.ndim(confusion) else None}


def most_confused(matrix, class_names, count=None):
    """(true, predicted, images) pairs off the diagonal, most images first (then by class order)."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    true, predicted = np.nonzero(off)
    order = sorted(zip(-off[true, predicted], true, predicted))
    pairs = [(class_names[t], class_names[p], int(-n)) for n, t, p in order]
    return pairs if count is None else pairs[:count]
