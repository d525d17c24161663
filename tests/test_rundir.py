"""The run directory: the run's files written and read back typed, checkpoints by name."""

import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.config import ModelConfig, TrainConfig
from alexnet_tf.data import dataset_stats
from alexnet_tf.training.rundir import Run, RunDir, RunDirError


def _stats():
    return dataset_stats.Stats(mean_image=np.full((256, 256, 3), 100.0, np.float32),
                               mean_channel=np.array([100.0, 110.0, 120.0], np.float32),
                               eigenvalues=np.array([0.3, 0.02, 0.01], np.float32),
                               eigenvectors=np.eye(3, dtype=np.float32), num_images=7)


def test_run_files_round_trip_typed(tmp_path):
    config = TrainConfig(model_dir=str(tmp_path), mean_mode="channel", input_scale="std",
                         by_precision=(("float32", "epochs", 4),),
                         model=ModelConfig(towers=1, devices="none"))
    run_dir = RunDir(str(tmp_path))
    run_dir.write(Run(config, ["a", "b", "c"], {"mixed_precision": "float32"}), _stats())
    assert sorted(os.listdir(tmp_path)) == ["alexnet_tf_mean_image.npy", "alexnet_tf_stats.json",
                                            "run_config.json"]        # no temporaries left
    run = run_dir.read()
    assert run.config == config and run.class_names == ["a", "b", "c"] and run.num_classes == 3
    assert run.runtime == {"mixed_precision": "float32"}
    normalise = run_dir.normalization(run)
    image = np.full((256, 256, 3), 130.0, np.float32)
    std = np.sqrt(np.array([0.3, 0.02, 0.01])) * 255.0     # channel std of the covariance, in pixels
    np.testing.assert_allclose(normalise(image)[0, 0], (130.0 - np.array([100, 110, 120])) / std,
                               rtol=1e-5)


def test_a_run_written_before_the_run_directory_module_still_loads(tmp_path):
    """run_config.json as the code of 2026-11-23 wrote it (a dict model, epochs_by_precision)."""
    document = {"train_config": {
        "model_dir": str(tmp_path), "dataset": "alexnet_shapes", "data_dir": None,
        "train_split": "train", "eval_split": "validation", "batch_size": 64, "epochs": 14,
        "epochs_by_precision": [["float32", 4]], "max_steps": None, "learning_rate": 0.004,
        "momentum": 0.9, "weight_decay": 0.0005, "lr_schedule": "cosine", "lr_patience": 1,
        "lr_max_decays": 3, "lr_boundaries": [], "lr_warmup_epochs": 1.0, "mean_mode": "image",
        "input_scale": "std", "pca": True, "seed": 0, "deterministic": False,
        "checkpoint_steps": 200, "keep_checkpoints": 3, "log_steps": 10,
        "mixed_precision": "auto", "jit_compile": "auto", "profile_steps": [], "histograms": False,
        "model": {"towers": 2, "lrn": True, "pool_size": 3, "pool_stride": 2, "activation": "relu",
                  "kernel_init": "he", "bias_init": "zeros", "dropout_rate": 0.0,
                  "devices": "auto"}},
        "class_names": ["x", "y"], "num_classes": 2}
    with open(tmp_path / "run_config.json", "w") as f:
        json.dump(document, f)
    run = RunDir(str(tmp_path)).read()
    assert run.config.for_precision("float32").epochs == 4 and run.config.eval_split == "validation"
    assert run.config.model.kernel_init == "he" and run.runtime == {}


def test_missing_and_unreadable_runs_get_one_line(tmp_path):
    with pytest.raises(RunDirError, match="is not a training run .no run_config.json."):
        RunDir(str(tmp_path)).read()
    (tmp_path / "run_config.json").write_text('{"train_config": {"colour": 1}, "class_names": []}')
    with pytest.raises(RunDirError, match="not a run configuration this version reads"):
        RunDir(str(tmp_path)).read()
    with pytest.raises(RunDirError, match="has no checkpoint yet; train first"):
        RunDir(str(tmp_path)).checkpoint("best")
    with pytest.raises(RunDirError, match="no checkpoint .*ckpt-9 .expected .*ckpt-9.index."):
        RunDir(str(tmp_path)).checkpoint(str(tmp_path / "ckpt-9"))


def test_best_falls_back_to_latest_and_paths_pass_through(tmp_path):
    step = tf.Variable(0, dtype=tf.int64)
    run_dir = RunDir(str(tmp_path))
    latest, best = run_dir.checkpoint_managers(tf.train.Checkpoint(step=step), step, keep=2)
    first = latest.save(checkpoint_number=5)
    assert run_dir.checkpoint("best") == first == run_dir.checkpoint("latest")   # no best yet
    step.assign(9)
    best_path = best.save(checkpoint_number=9)
    latest.save(checkpoint_number=9)
    assert run_dir.checkpoint("best") == best_path
    assert os.path.dirname(best_path) == os.path.join(str(tmp_path), "best")
    assert run_dir.checkpoint("latest") == os.path.join(str(tmp_path), "ckpt-9")
    assert run_dir.checkpoint(first) == first


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
