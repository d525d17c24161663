"""Evaluation of trained runs: top-1 / top-5 error, 10-crop averaging, ensembles (section 6).

Everything a run directory holds is read through `rundir`; the counting is
`metrics`'.
"""

import numpy as np
import tensorflow as tf

from alexnet_tf import input_pipeline, metrics, sources
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


def evaluate_runs(model_dirs, *, split=None, dataset=None, data_dir=None, which="best",
                  ten_crop=False, batch_size=64):
    """Evaluates each run, and their ensemble (mean softmax) when there are several.

    Returns (split, rows): the split evaluated (default: the first run's
    evaluation split) and a list of rows {"model", "checkpoint", "top1_error",
    "top5_error", "examples"}.
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
        model, run, path = run_dir.restore_model(which)
        data = input_pipeline.eval_dataset(source, run_dir.normalization(run), batch_size,
                                           split=split, ten_crop=ten_crop,
                                           image_size=run.config.image_size)
        probs, labels = probabilities(model, data, ten_crop)
        all_probs.append(probs)
        rows.append({"model": run_dir.path, "checkpoint": path,
                     **metrics.error_rates(probs, labels)})
    if len(run_dirs) > 1:
        ensemble = metrics.error_rates(metrics.ensemble_probabilities(all_probs), labels)
        rows.append({"model": f"{len(run_dirs)} CNNs (mean softmax)", "checkpoint": "",
                     **ensemble})
    return split, rows


def format_table(rows, split, ten_crop):
    """A table like the paper's section 6 table."""
    crops = "10-crop" if ten_crop else "centre crop"
    lines = [f"split: {split} ({crops})", f"{'model':<48} {'top-1 error':>12} {'top-5 error':>12}"]
    for row in rows:
        lines.append(f"{row['model'][-48:]:<48} {row['top1_error'] * 100:>11.2f}% "
                     f"{row['top5_error'] * 100:>11.2f}%")
    return "\n".join(lines)
