"""Evaluation of trained model_dirs: top-1 / top-5 error, 10-crop averaging, ensembles.

A model_dir (written by `train.train`) holds everything evaluation needs:
`run_config.json` (model arguments, class names, preprocessing), the
training-set statistics, and checkpoints (`ckpt-<step>`, best under `best/`).
"""

import json
import os

import numpy as np
import tensorflow as tf

from alexnet_tf import input_pipeline, paper
from alexnet_tf.models import build_alexnet
from alexnet_tf.train import RUN_CONFIG, top_k_errors


class ModelDirError(ValueError):
    """A model_dir that cannot be evaluated; the message is one line."""


def read_run_config(model_dir):
    path = os.path.join(model_dir, RUN_CONFIG)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ModelDirError(f"{model_dir} is not a training run (no {RUN_CONFIG}); pass the "
                            "--model_dir that alexnet-train wrote") from None


def checkpoint_path(model_dir, which="best"):
    """The checkpoint `which` names: 'best', 'latest', or a path prefix like DIR/ckpt-500."""
    if which in ("best", "latest"):
        folder = os.path.join(model_dir, "best") if which == "best" else model_dir
        path = tf.train.latest_checkpoint(folder)
        if path is None and which == "best":
            path = tf.train.latest_checkpoint(model_dir)   # a run shorter than one epoch
        if path is None:
            raise ModelDirError(f"{model_dir} has no checkpoint yet; train first")
        return path
    if not tf.io.gfile.exists(which + ".index"):
        raise ModelDirError(f"no checkpoint {which} (expected {which}.index)")
    return which


def load_model(model_dir, which="best", devices=None):
    """(model, run config, checkpoint path): the model rebuilt from run_config.json and restored."""
    run = read_run_config(model_dir)
    kwargs = dict(run["train_config"]["model"])
    kwargs["devices"] = devices
    model = build_alexnet(run["num_classes"], **kwargs)
    path = checkpoint_path(model_dir, which)
    tf.train.Checkpoint(model=model).restore(path).expect_partial().assert_existing_objects_matched()
    return model, run, path


def load_stats(model_dir):
    stats = input_pipeline.load_stats(model_dir)
    if stats is None:
        raise ModelDirError(f"{model_dir} has no training-set statistics "
                            f"({input_pipeline.STATS_FILE}); it was not written by alexnet-train")
    return stats


def probabilities(model, dataset, ten_crop=False):
    """Softmax probabilities [N, C] and labels [N]; 10-crop averages the ten softmaxes (section 4.1)."""
    @tf.function(reduce_retracing=True)
    def predict(images):
        if ten_crop:
            shape = tf.shape(images)
            flat = tf.reshape(images, tf.concat([[-1], shape[2:]], 0))
            probs = tf.nn.softmax(tf.cast(model(flat, training=False), tf.float32))
            return tf.reduce_mean(tf.reshape(probs, [shape[0], shape[1], -1]), axis=1)
        return tf.nn.softmax(tf.cast(model(images, training=False), tf.float32))

    probs, labels = [], []
    for images, batch_labels in dataset:
        probs.append(predict(images).numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(probs), np.concatenate(labels)


def error_rates(probs, labels):
    """Top-1 and top-5 error of probabilities [N, C] against labels [N].

    Counted as validation during training counts them (`train.top_k_errors`), so
    the two agree on the same predictions.
    """
    miss1, miss5 = top_k_errors(tf.constant(labels, tf.int64), tf.constant(probs))
    n = int(len(labels))
    return {"top1_error": float(miss1) / max(n, 1), "top5_error": float(miss5) / max(n, 1),
            "examples": n}


def evaluate_model_dirs(model_dirs, *, split=None, dataset=None, data_dir=None, which="best",
                        ten_crop=False, batch_size=64):
    """Evaluates each model_dir, and their ensemble (mean softmax) when there are several.

    Returns a list of rows {"model", "checkpoint", "top1_error", "top5_error", "examples"}.
    """
    runs = [read_run_config(d) for d in model_dirs]
    if any(r["class_names"] != runs[0]["class_names"] for r in runs):
        raise ModelDirError("the model_dirs were trained on different classes; an ensemble needs "
                            "the same classes in the same order")
    config = runs[0]["train_config"]
    source = input_pipeline.open_source(dataset or config["dataset"],
                                        data_dir if data_dir is not None else config["data_dir"])
    if source.class_names != runs[0]["class_names"]:
        raise ModelDirError(f"{source.name} has other classes than the model was trained on")
    split = split or config["eval_split"]
    rows, all_probs = [], []
    for model_dir in model_dirs:
        model, run, path = load_model(model_dir, which)
        cfg = run["train_config"]
        data = input_pipeline.eval_dataset(
            source, load_stats(model_dir), batch_size, split=split, mean_mode=cfg["mean_mode"],
            input_scale=cfg.get("input_scale", "none"), ten_crop=ten_crop,
            image_size=cfg["model"].get("image_size", paper.IMAGE_SIZE))
        probs, labels = probabilities(model, data, ten_crop)
        all_probs.append(probs)
        rows.append({"model": model_dir, "checkpoint": path, **error_rates(probs, labels)})
    if len(model_dirs) > 1:
        ensemble = error_rates(np.mean(all_probs, axis=0), labels)
        rows.append({"model": f"{len(model_dirs)} CNNs (mean softmax)", "checkpoint": "",
                     **ensemble})
    return rows


def format_table(rows, split, ten_crop):
    """A table like the paper's section 6 table."""
    crops = "10-crop" if ten_crop else "centre crop"
    lines = [f"split: {split} ({crops})", f"{'model':<48} {'top-1 error':>12} {'top-5 error':>12}"]
    for row in rows:
        lines.append(f"{row['model'][-48:]:<48} {row['top1_error'] * 100:>11.2f}% "
                     f"{row['top5_error'] * 100:>11.2f}%")
    return "\n".join(lines)
