"""Per-class evaluation: top-1 error, precision and recall per class, the confusion matrix.

`alexnet-eval --report=DIR` writes `per_class.csv`, `per_class.json`,
`confusion.png` (`figures.confusion_image`) and `most_confused.csv`; training
logs the validation confusion matrix to TensorBoard every epoch.

The matrix M is `metrics.confusion_matrix`'s: rows are true classes, columns
predicted top-1 classes. recall_c = M[c, c] / sum_j M[c, j] (= 1 - the class's
top-1 error), precision_c = M[c, c] / sum_i M[i, c] (0 when nothing was
predicted c).

Example:

    matrix = metrics.confusion_matrix(probs.argmax(1), labels, num_classes)
    rows = per_class(matrix, class_names)
    pairs = most_confused(matrix, class_names, 10)
"""

import csv
import io
import os

import numpy as np

from alexnet_tf import files
from alexnet_tf.metrics import most_confused

TOP_PAIRS = 10


def per_class(matrix, class_names):
    """One dict per class: name, images, top1_error, precision, recall."""
    hits = np.diag(matrix).astype(np.float64)
    support, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    rows = []
    for c, name in enumerate(class_names):
        recall = hits[c] / support[c] if support[c] else 0.0
        rows.append({"class": name, "images": int(support[c]),
                     "top1_error": 1.0 - recall if support[c] else 0.0,
                     "precision": hits[c] / predicted[c] if predicted[c] else 0.0,
                     "recall": recall})
    return rows


def write_report(folder, matrix, class_names):
    """Writes the report files into `folder` (each atomically); returns the top pairs."""
    from alexnet_tf import figures  # Pillow, only when a report is asked for
    rows = per_class(matrix, class_names)
    pairs = most_confused(matrix, class_names)
    files.atomic_write_json(os.path.join(folder, "per_class.json"), {
        "classes": rows, "confusion_matrix": matrix.tolist(), "class_names": list(class_names),
        "most_confused": [list(p) for p in pairs[:TOP_PAIRS]]})
    files.atomic_write(os.path.join(folder, "per_class.csv"), _csv(
        ["class", "images", "top1_error", "precision", "recall"],
        [[r["class"], r["images"], f"{r['top1_error']:.6f}", f"{r['precision']:.6f}",
          f"{r['recall']:.6f}"] for r in rows]))
    files.atomic_write(os.path.join(folder, "most_confused.csv"), _csv(
        ["true", "predicted", "images"], pairs))
    figures.write_png(os.path.join(folder, "confusion.png"),
                      figures.confusion_image(matrix, class_names))
    return pairs[:TOP_PAIRS]


def _csv(header, rows):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()
