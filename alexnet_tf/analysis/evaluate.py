"""Evaluation of trained runs: top-1 / top-5 error, 10-crop averaging, ensembles (section 6).

Everything a run directory holds is read through `rundir`; the counting is
`metrics`'.
"""

import os

import numpy as np
import tensorflow as tf

from alexnet_tf import metrics
from alexnet_tf.analysis import report
from alexnet_tf.data import input_pipeline, preprocessing, sources
from alexnet_tf.serving import deploy
from alexnet_tf.training import ownership
from alexnet_tf.training.restore import restore_model
from alexnet_tf.training.rundir import RunDir, RunDirError


def probabilities(model, dataset, ten_crop=False, jit_compile=False):
    """Softmax probabilities [N, C] and labels [N]; 10-crop averages the ten softmaxes (section 4.1).

    `jit_compile`: compile the forward pass with XLA (`runtime.resolve_inference` decides).
    """
    @tf.function(reduce_retracing=True, jit_compile=jit_compile)
    def predict(images):
        if ten_crop:
            return metrics.crop_averaged_probabilities(model, images)
        return metrics.probabilities(model(images, training=False))

    probs, labels, full = [], [], None
    for images, batch_labels in dataset:
        count = int(images.shape[0])
        full = full or count
        if jit_compile and count < full:      # one compiled shape: pad the last batch, drop after
            images = tf.pad(images, [[0, full - count]] + [[0, 0]] * (images.shape.rank - 1))
        probs.append(predict(images).numpy()[:count])
        labels.append(batch_labels.numpy())
    return np.concatenate(probs), np.concatenate(labels)


def run_probabilities(model, run_dir, run, source, split, *, ten_crop=False, batch_size=64,
                      max_images=None, jit_compile=False):
    """Softmax [N, C] and labels [N] of a run's restored `model` on `source`'s split, preprocessed
    as the run was trained (its normalisation, resize and input size)."""
    data = input_pipeline.eval_dataset(source, run_dir.normalization(run), batch_size,
                                       split=split, ten_crop=ten_crop,
                                       image_size=run.config.image_size, max_images=max_images)
    return probabilities(model, data, ten_crop, jit_compile)


def evaluate_runs(model_dirs, *, split=None, dataset=None, data_dir=None, which="best",
                  ten_crop=False, batch_size=64, report_dir=None, max_images=None,
                  precision=None, jit_compile=False):
    """Evaluates each run, and their ensemble (mean softmax) when there are several.

    Returns (split, rows): the split evaluated (default: the first run's
    evaluation split) and a list of rows {"model", "checkpoint", "top1_error",
    "top5_error", "examples"}. With `report_dir`, the per-class report of the
    last row (the one run, or the ensemble) is written there (`report`), and
    that row gets "most_confused": the top pairs. `max_images`: only the split's
    first this many images. `precision`, `jit_compile`: how the models compute
    (`runtime.resolve_inference`; None: as the Keras dtype policy is set).
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
        model, run, path = restore_model(run_dir, which, precision=precision)
        probs, labels = run_probabilities(model, run_dir, run, source, split, ten_crop=ten_crop,
                                          batch_size=batch_size, max_images=max_images,
                                          jit_compile=jit_compile)
        all_probs.append(probs)
        rows.append({"model": run_dir.path, "checkpoint": path,
                     **metrics.error_rates(probs, labels),
                     "history": ownership.summary(run_dir.path)})
    if len(run_dirs) > 1:
        all_probs.append(metrics.ensemble_probabilities(all_probs))
        rows.append({"model": f"{len(run_dirs)} CNNs (mean softmax)", "checkpoint": "",
                     **metrics.error_rates(all_probs[-1], labels)})
    if report_dir is not None:
        _report(rows[-1], report_dir, all_probs[-1], labels, runs[0].class_names)
    return split, rows


def _report(row, report_dir, probs, labels, class_names):
    """Writes the per-class report of `probs` into `report_dir`; `row` gets its "most_confused"."""
    matrix = metrics.confusion_matrix(probs.argmax(axis=1), labels, len(class_names))
    row["most_confused"] = report.write_report(report_dir, matrix, class_names)


def evaluate_deployed(path, *, split=None, dataset=None, data_dir=None, batch_size=64,
                      report_dir=None, max_images=None):
    """Evaluates a LiteRT/ONNX file (or a version folder holding only those) with its runtime.

    The images are read and resized as the run did (its export_report.json beside the
    file records the run, its dataset and its resize), sent as uint8 [B, 256, 256, 3]; the
    file computes the rest (centre crop). Returns (split, rows) as `evaluate_runs`.
    """
    artifact = deploy.find_artifact(path)
    if artifact is None:
        found = sorted(n for n in (os.listdir(path) if os.path.isdir(path) else [])
                       if n.endswith((".tflite", ".onnx")))
        raise RunDirError(
            f"{path} holds a SavedModel beside {', '.join(found)}: give one file's path "
            "(--model_dir evaluates the run itself)" if found else
            f"{path} is neither a .tflite/.onnx file nor a folder holding one")
    runner = deploy.Runner(artifact)
    folder = os.path.dirname(artifact)
    exported = deploy.read_report(folder)
    recorded = exported.get("run", {})
    if not (dataset or recorded.get("dataset")):
        raise RunDirError(f"{folder} has no {deploy.REPORT} naming the dataset; give --dataset")
    source = sources.open_source(dataset or recorded["dataset"],
                                 data_dir if data_dir is not None else recorded.get("data_dir"))
    names = deploy.read_labels(folder)
    if names is not None and names != source.class_names:
        raise RunDirError(f"{source.name} has other classes than {deploy.LABELS} beside "
                          f"{artifact}")
    split = split or recorded.get("eval_split") or "validation"
    resize = exported.get("input", {}).get("resize", preprocessing.SHORTER_SIDE)
    data = input_pipeline.client_dataset(source, resize, batch_size, split=split,
                                         max_images=max_images)
    probs, labels = [], []
    for images, batch_labels in data.as_numpy_iterator():
        probs.append(runner(images))
        labels.append(batch_labels)
    probs, labels = np.concatenate(probs), np.concatenate(labels)
    if probs.shape[1] != len(source.class_names):
        raise RunDirError(f"{artifact} scores {probs.shape[1]} classes; {source.name} has "
                          f"{len(source.class_names)}")
    rows = [{"model": os.path.abspath(artifact), "checkpoint": exported.get("checkpoint", ""),
             **metrics.error_rates(probs, labels)}]
    if report_dir is not None:
        _report(rows[-1], report_dir, probs, labels, source.class_names)
    return split, rows


def format_table(rows, split, ten_crop):
    """A table like the paper's section 6 table."""
    crops = "10-crop" if ten_crop else "centre crop"
    # The model's whole path, and the checkpoint it scored (inside the model's folder: from it).
    scored = [os.path.relpath(r["checkpoint"], r["model"]) if r.get("checkpoint") and
              os.path.abspath(r["checkpoint"]).startswith(os.path.abspath(r["model"]) + os.sep)
              else r.get("checkpoint") or "" for r in rows]
    width = max([len("model")] + [len(r["model"]) for r in rows])
    ckpt = max([len("checkpoint")] + [len(c) for c in scored])
    lines = [f"split: {split} ({crops})",
             f"{'model':<{width}}  {'checkpoint':<{ckpt}} {'top-1 error':>12} {'top-5 error':>12}"]
    for row, checkpoint in zip(rows, scored):
        lines.append(f"{row['model']:<{width}}  {checkpoint:<{ckpt}} "
                     f"{row['top1_error'] * 100:>11.2f}% {row['top5_error'] * 100:>11.2f}%")
    return "\n".join(lines)
