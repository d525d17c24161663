"""Data parallelism with tf.distribute, on CPUs: mirrored replicas and two local worker processes."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.config import ModelConfig, TrainConfig
from alexnet_tf.data import dataset_stats, input_pipeline, sources
from alexnet_tf.model.network import build_alexnet
from alexnet_tf.training import train
from alexnet_tf.training.optimizer import PaperSGD
from helpers import REPO, assert_close, assert_equal, free_ports

TINY = "alexnet_shapes/tiny"
# Two replicas sum their halves' gradients in another order than one device sums the whole
# batch's: float32 round-off, far below one update (lr * gradient ~ 1e-4 here).
UPDATE_ATOL = 2e-6


def _one_step(strategy, images, labels):
    """Variables before and after one train step under `strategy`, from the same seed."""
    with strategy.scope():
        model = build_alexnet(10, devices=None, seed=7, kernel_init="he", bias_init="zeros",
                              dropout_rate=0.0)
        optimizer = PaperSGD(learning_rate=0.01)
        optimizer.build(model.trainable_variables)
    before = [v.numpy() for v in model.trainable_variables]
    step = train.make_train_step(model, optimizer, int(images.shape[0]), strategy)
    data = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors((images, labels)))
    sums = [float(t) for t in step(next(iter(data)))]
    return before, [v.numpy() for v in model.trainable_variables], sums


def test_mirrored_step_equals_the_default_strategy_step():
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(8, 224, 224, 3)), tf.float32)
    labels = tf.constant(rng.integers(0, 10, 8), tf.int64)
    mirrored = tf.distribute.MirroredStrategy(["/CPU:0", "/CPU:1"])
    assert mirrored.num_replicas_in_sync == 2
    before_1, after_1, sums_1 = _one_step(tf.distribute.get_strategy(), images, labels)
    before_2, after_2, sums_2 = _one_step(mirrored, images, labels)
    for b1, b2 in zip(before_1, before_2):
        assert_equal(b1, b2)                  # same start
    moved = 0
    for b, a1, a2 in zip(before_1, after_1, after_2):
        assert_close(a2 - b, a1 - b, rtol=0, atol=UPDATE_ATOL, name="after a step")
        moved += np.abs(a1 - b).max() > 10 * UPDATE_ATOL
    assert moved >= len(before_1) // 2                         # the step really changed weights
    # Loss and miss counts are summed over the replicas (the loss is scaled by the global batch).
    np.testing.assert_allclose(sums_2, sums_1, rtol=1e-5)


def test_worker_shards_are_disjoint_and_augmented_as_one_pipeline(tiny_data_dir):
    source = sources.open_source(TINY, tiny_data_dir)
    normalization = dataset_stats.Normalization(dataset_stats.stats_for(source))
    whole = list(input_pipeline.train_dataset(source, normalization, 1, seed=3, epoch=1)
                 .as_numpy_iterator())
    shards = [list(input_pipeline.train_dataset(source, normalization, 1, seed=3, epoch=1,
                                                shard=(2, i), max_batches=30)
                   .as_numpy_iterator()) for i in range(2)]
    assert [len(s) for s in shards] == [30, 30]
    for i, shard in enumerate(shards):
        for k, (image, label) in enumerate(shard):
            expected_image, expected_label = whole[2 * k + i]
            np.testing.assert_array_equal(label, expected_label)
            np.testing.assert_allclose(image, expected_image, atol=1e-5)


def test_towers_on_devices_are_refused_under_data_parallelism(tmp_path):
    config = TrainConfig(model_dir=str(tmp_path), model=ModelConfig(devices="/CPU:0,/CPU:1"))
    with pytest.raises(ValueError, match="alternatives"):
        train.train(config, tf.distribute.MirroredStrategy(["/CPU:0", "/CPU:1"]))


# --- Two worker processes on 127.0.0.1 ----------------------------------------------

def _start_workers(ports, args, log_dir):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(len(ports)):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": index}}))
        log = open(os.path.join(log_dir, f"worker{index}.log"), "w")
        procs.append((subprocess.Popen(
            [sys.executable, "-m", "alexnet_tf.cli.train", *args], cwd=REPO, env=env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log))
    return procs


def _kill_all(procs):
    for p, log in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        log.close()


def _wait_all(procs, timeout):
    """Exit codes of every worker; kills every process group on the way out, whatever happens."""
    try:
        return [p.wait(timeout=timeout) for p, _ in procs]
    finally:
        _kill_all(procs)


def _checkpoint_values(prefix):
    """Every variable of a checkpoint: weights, velocities, step, epoch, schedule, RNG."""
    reader = tf.train.load_checkpoint(prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if k.endswith("VARIABLE_VALUE")}


def test_two_workers_train_agree_and_resume(tiny_data_dir, tmp_path):
    model_dir = tmp_path / "run"
    args = [f"--model_dir={model_dir}", f"--dataset={TINY}", f"--data_dir={tiny_data_dir}",
            "--strategy=multi_worker", "--batch_size=8", "--kernel_init=he", "--bias_init=zeros",
            "--input_scale=std", "--learning_rate=0.001", "--log_steps=1", "--checkpoint_steps=2",
            "--mixed_precision=float32",
            "--worker_timeout=120", "--seed=1"]
    logs = tmp_path / "logs1"
    logs.mkdir()
    codes = _wait_all(_start_workers(free_ports(2), [*args, "--max_steps=2"], str(logs)), 400)
    texts = [(logs / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n\n".join(t[-3000:] for t in texts)

    chief = tf.train.latest_checkpoint(str(model_dir))
    other = tf.train.latest_checkpoint(str(model_dir / ".workers" / "worker_1"))
    assert chief.endswith("ckpt-2") and other.endswith("ckpt-2")
    chief_values, other_values = _checkpoint_values(chief), _checkpoint_values(other)
    assert len(chief_values) >= 60                  # 30 weights and 30 velocities, at least
    for key, value in chief_values.items():
        assert_equal(other_values[key], value, key)
    assert (model_dir / "run_config.json").exists()
    assert not (model_dir / ".workers" / "worker_1" / "run_config.json").exists()

    logs = tmp_path / "logs2"
    logs.mkdir()
    codes = _wait_all(_start_workers(free_ports(2), [*args, "--max_steps=3"], str(logs)), 400)
    texts = [(logs / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n\n".join(t[-3000:] for t in texts)
    for text in texts:
        assert f"Resuming from step 2 (epoch 1) of {model_dir}/ckpt-2" in text
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-3")


def test_a_dead_worker_stops_the_other_with_a_clear_message(tiny_data_dir, tmp_path):
    args = [f"--model_dir={tmp_path / 'run'}", f"--dataset={TINY}", f"--data_dir={tiny_data_dir}",
            "--strategy=multi_worker", "--batch_size=8", "--kernel_init=he", "--bias_init=zeros",
            "--input_scale=std", "--learning_rate=0.001", "--log_steps=1", "--max_steps=500",
            "--mixed_precision=float32",
            "--worker_timeout=20"]
    procs = _start_workers(free_ports(2), args, str(tmp_path))
    try:
        log0 = tmp_path / "worker0.log"
        deadline = time.time() + 300
        while "step 2/" not in log0.read_text():                  # training is under way
            assert time.time() < deadline and procs[0][0].poll() is None, log0.read_text()[-3000:]
            time.sleep(1)
        os.killpg(procs[1][0].pid, signal.SIGKILL)
        killed_at = time.time()
        code = procs[0][0].wait(timeout=180)
        waited = time.time() - killed_at
    finally:
        _kill_all(procs)
    text = log0.read_text()
    assert code != 0, text[-3000:]
    assert "another worker stopped responding" in text, text[-3000:]
    assert waited < 120
