"""Evaluation of trained runs: top-1 / top-5 error, 10-crop averaging, ensembles (section 6).

Everything a run directory holds is read through `rundir`; the counting is
`metrics`'.
"""

import numpy as np
import tensorflow as tf

from alexnet_tf import input_pipeline, metrics, ownership, report, sources
from alexnet_tf.restore import restore_model
from alexnet_tf.rundir import RunDir, RunDirError


def probabilities(model, dataset, ten_crop=False):
    """Softmax probabilities [N, C] and labels [N]; 10-crop averages the ten softmaxes (section 4.1)."""
    @tf.function(reduce_retracing=True)
    def predict(images):
        if ten_crop:
            return metrics.crop_averaged_probabilities(model, images)
        return metrics.probabilities(model(images, training=False))

    probs, labels = [], []
    for images, batch_labels in dataset:
        probs.append(predict(images).numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(probs), np.concatenate(labels)


def run_probabilities(model, run_dir, run, source, split, *, ten_crop=False, batch_size=64,
                      max_images=None):
    """Softmax [N, C] and labels [N] of a run's restored `model` on `source`'s split, preprocessed
    as the run was trained (its normalisation, resize and input size)."""
    data = input_pipeline.eval_dataset(source, run_dir.normalization(run), batch_size,
                                       split=split, ten_crop=ten_crop,
                                       image_size=run.config.image_size, max_images=max_images)
    return probabilities(model, data, ten_crop)


def evaluate_runs(model_dirs, *, split=None, dataset=None, data_dir=None, which="best",
                  ten_crop=False, batch_size=64, report_dir=None, max_images=None):
    """Evaluates each run, and their ensemble (mean softmax) when there are several.

    Returns (split, rows): the split evaluated (default: the first run's
    evaluation split) and a list of rows {"model", "checkpoint", "top1_error",
    "top5_error", "examples"}. With `report_dir`, the per-class report of the
    last row (the one run, or the ensemble) is written there (`report`), and
    that row gets "most_confused": the top pairs. `max_images`: only the split's
    first this many images.
    """
    run_dirs = [RunDir(d) for d in model_dirs]
    runs = [r.read() for r in run_dirs]
    if any(r.class_names != runs[0].class_names for r in runs):
        raise RunDirError("the model_dirs were trained on different classes; an ensemble needs "
                          "the same classes in the same order")
    config = runs[0].config
    source = sources.open_source(dataset or config.dataset,
                                 data_dir if data_dir is not None else config.data_dir)
    if source.class_names != runs[0].class_names:
        raise RunDirError(f"{source.name} has other classes than the model was trained on")
    split = split or config.eval_split
    rows, all_probs = [], []
    for run_dir in run_dirs:
        model, run, path = restore_model(run_dir, which)
        probs, labels = run_probabilities(model, run_dir, run, source, split, ten_crop=ten_crop,
                                          batch_size=batch_size, max_images=max_images)
        all_probs.append(probs)
        rows.append({"model": run_dir.path, "checkpoint": path,
                     **metrics.error_rates(probs, labels),
                     "history": ownership.summary(run_dir.path)})
    if len(run_dirs) > 1:
        all_probs.append(metrics.ensemble_probabilities(all_probs))
        rows.append({"model": f"{len(run_dirs)} CNNs (mean softmax)", "checkpoint": "",
                     **metrics.error_rates(all_probs[-1], labels)})
    if report_dir is not None:
        matrix = metrics.confusion_matrix(all_probs[-1].argmax(axis=1), labels,
                                         len(runs[0].class_names))
        rows[-1]["most_confused"] = report.write_report(report_dir, matrix, runs[0].class_names)
    return split, rows


def format_table(rows, split, ten_crop):
    """A table like the paper's section 6 table."""
    crops = "10-crop" if ten_crop else "centre crop"
    lines = [f"split: {split} ({crops})", f"{'model':<48} {'top-1 error':>12} {'top-5 error':>12}"]
    for row in rows:
        lines.append(f"{row['model'][-48:]:<48} {row['top1_error'] * 100:>11.2f}% "
                     f"{row['top5_error'] * 100:>11.2f}%")
    return "\n".join(lines)
