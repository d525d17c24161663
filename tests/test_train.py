"""The training loop: the paper's update through the real step, placement, resume, NaN, summaries."""

import glob
import json
import os
import re
import sys

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import config as config_lib, hardware, metrics
from alexnet_tf.config import ModelConfig, TrainConfig
from alexnet_tf.data import input_pipeline, sources
from alexnet_tf.model.network import build_alexnet
from alexnet_tf.training import train
from alexnet_tf.training.optimizer import PaperSGD
from alexnet_tf.training.restore import restore_model
from alexnet_tf.training.rundir import RunDir
from helpers import assert_close, assert_equal

TINY = "alexnet_shapes/tiny"

TOWER_SCOPE = re.compile(r"/[a-z]+\d_([ab])(?:_\d+)?/")


def tiny_config(model_dir, data_dir, **overrides):
    """A CPU-cheap run on the built-in dataset's tiny config (80 training images)."""
    settings = dict(model_dir=str(model_dir), dataset=TINY, data_dir=data_dir,
                    batch_size=8, epochs=1, log_steps=5, checkpoint_steps=5, seed=1,
                    input_scale="std", learning_rate=0.001, mixed_precision="float32",
                    jit_compile="false",
                    model=ModelConfig(devices="none", kernel_init="he", bias_init="zeros"))
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.mark.parametrize("jit_compile", [False, True])     # True: XLA (the AVX2 default)
def test_train_step_is_the_papers_update(jit_compile):
    # A large decay (1.0) so that the decay term stands well above float32 noise.
    lr, momentum, decay = 0.01, 0.9, 1.0
    hardware.configure_xla_cpu()                    # as a run does before XLA compiles
    model = build_alexnet(10, devices=None, dropout_rate=0.0, seed=2, kernel_init="he")
    optimizer = PaperSGD(learning_rate=lr, momentum=momentum, weight_decay=decay)
    optimizer.build(model.trainable_variables)
    step = train.make_train_step(model, optimizer, 2, tf.distribute.get_strategy(), jit_compile)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(2, 224, 224, 3)), tf.float32)
    labels = tf.constant([3, 7], tf.int64)
    names = [v.path for v in model.trainable_variables]
    velocity = {n: 0.0 for n in names}
    # An independent gradient: a tape over the model, compiled like the step (so with XLA's
    # rounding too: a rounding change can move a max pooling window's maximum between two
    # near-equal values and route that window's gradient elsewhere; seen with the inputs below).
    # The compiled layers' gradients are checked against numpy in test_layers.py.
    @tf.function(jit_compile=jit_compile)
    def gradients():
        with tf.GradientTape() as tape:
            loss = metrics.cross_entropy(labels, model(images, training=True), 2)
        return tape.gradient(loss, model.trainable_variables)

    for _ in range(3):
        before = {v.path: v.numpy().astype(np.float64) for v in model.trainable_variables}
        grads = dict(zip(names, (g.numpy() for g in gradients())))
        step((images, labels))
        for v in model.trainable_variables:
            # v <- 0.9 v - decay * lr * w - lr * g  (decay on kernels only);  w <- w + v
            weight_term = decay * lr * before[v.path] if v.path.endswith("kernel") else 0.0
            velocity[v.path] = momentum * velocity[v.path] - weight_term - lr * grads[v.path]
            change = v.numpy().astype(np.float64) - before[v.path]
            expected = velocity[v.path]
            assert_close(change, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max(),
                         name=v.path)


def test_backward_pass_stays_on_the_towers_devices():
    model = build_alexnet(10, devices=("/CPU:0", "/CPU:1"), seed=0)
    optimizer = PaperSGD()
    optimizer.build(model.trainable_variables)
    step = train.make_train_step(model, optimizer, 4, tf.distribute.get_strategy())
    spec = (tf.TensorSpec([4, 224, 224, 3], tf.float32), tf.TensorSpec([4], tf.int64))
    graph = step.get_concrete_function(spec).graph
    backward = {"Conv2DBackpropFilter", "Conv2DBackpropInput", "MatMul", "LRNGrad", "MaxPoolGrad",
                "Mul"}
    seen = set()
    for op in graph.get_operations():
        match = TOWER_SCOPE.search(op.name)
        if op.type in backward and "gradients" in op.name and match:
            tower = match.group(1)
            # LRN's backward: TF's LRNGrad, or the band-matrix form's ops (AVX2 CPUs).
            seen.add((tower, "LRN backward" if "/lrn" in op.name else op.type))
            index = tf.DeviceSpec.from_string(op.device).device_index
            assert index == (1 if tower == "b" else 0), (op.name, op.device)
    for op_type in ("Conv2DBackpropFilter", "Conv2DBackpropInput", "MatMul", "LRN backward"):
        assert ("b", op_type) in seen and ("a", op_type) in seen, op_type


@pytest.fixture(scope="module")
def trained_dir(tiny_data_dir, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("run")
    metrics = train.train(tiny_config(model_dir, tiny_data_dir), log=lambda line: None)
    return str(model_dir), metrics


def test_a_run_validates_checkpoints_and_writes_run_files(trained_dir, tiny_data_dir):
    model_dir, metrics = trained_dir
    assert metrics["examples"] == 40
    # The run's last validation, counted again by numpy on the final model's logits.
    model, run, _ = restore_model(model_dir, "latest")
    data = input_pipeline.eval_dataset(sources.open_source(TINY, tiny_data_dir),
                                       RunDir(model_dir).normalization(run), 16)
    logits, labels = zip(*[(model(x, training=False).numpy(), y.numpy()) for x, y in data])
    logits, labels = np.concatenate(logits), np.concatenate(labels)
    rank = (logits > logits[np.arange(len(labels)), labels][:, None]).sum(axis=1)
    assert metrics["top1_error"] == pytest.approx(np.mean(rank >= 1), abs=1e-9)
    assert metrics["top5_error"] == pytest.approx(np.mean(rank >= 5), abs=1e-9)
    steps = sorted(int(p.split("-")[-1][:-6]) for p in glob.glob(f"{model_dir}/ckpt-*.index"))
    assert steps == [5, 10]                                     # every 5 steps, numbered by step
    assert glob.glob(f"{model_dir}/best/ckpt-10.index")
    for name in ("run_config.json", "alexnet_tf_stats.json", "alexnet_tf_mean_image.npy"):
        assert os.path.exists(os.path.join(model_dir, name))


def _scalars(folder):
    values = {}
    for path in glob.glob(f"{folder}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                values.setdefault(value.tag, []).append(value)
    return values


def test_summaries_are_written(trained_dir):
    model_dir, metrics = trained_dir
    train_tags = _scalars(os.path.join(model_dir, "train"))
    for tag in ("loss", "top1_error", "top5_error", "learning_rate", "images_per_second",
                "weight_norm", "conv1_kernels"):
        assert tag in train_tags, tag
    lr = [tf.make_ndarray(v.tensor) for v in train_tags["learning_rate"]]
    np.testing.assert_allclose(lr, 0.001, rtol=1e-6)
    image = train_tags["conv1_kernels"][0].tensor.string_val       # [width, height, png]
    decoded = tf.io.decode_png(image[2]).numpy()
    assert decoded.shape[2] == 3 and decoded.shape[1] == 16 * (11 * 3 + 1)
    validation = _scalars(os.path.join(model_dir, "validation"))
    top1 = [float(tf.make_ndarray(v.tensor)) for v in validation["top1_error"]]
    assert top1[-1] == pytest.approx(metrics["top1_error"], abs=1e-6)


def test_cosine_schedule_sets_every_steps_rate_also_after_a_restart(tiny_data_dir, tmp_path):
    # 10 steps an epoch, 2 epochs: 5 warm-up steps, then half a cosine over the other 15.
    settings = dict(epochs=2, log_steps=1, lr_schedule="cosine", lr_warmup_epochs=0.5)
    train.train(tiny_config(tmp_path, tiny_data_dir, max_steps=4, **settings), log=lambda l: None)
    train.train(tiny_config(tmp_path, tiny_data_dir, max_steps=8, **settings), log=lambda l: None)
    logged = {event.step: float(tf.make_ndarray(value.tensor))
              for path in glob.glob(os.path.join(tmp_path, "train", "events.out.tfevents.*"))
              for event in tf.compat.v1.train.summary_iterator(path)
              for value in event.summary.value if value.tag == "learning_rate"}
    # The scalar at step s is the rate of the update that made step s (k = s - 1 steps before it).
    expected = {s: 0.001 * s / 5 if s <= 5 else 0.001 * (1 + np.cos(np.pi * (s - 6) / 15)) / 2
                for s in range(1, 9)}
    assert sorted(logged) == list(range(1, 9))
    np.testing.assert_allclose([logged[s] for s in range(1, 9)],
                               [expected[s] for s in range(1, 9)], rtol=1e-6)
    # Each run was cut short by --max_steps before an epoch's end: each still ends with what
    # an epoch's end writes (validation, and the conv1 kernels at its last step).
    def steps_of(folder, tag):
        return sorted(event.step for path in glob.glob(os.path.join(folder, "events.out.*"))
                      for event in tf.compat.v1.train.summary_iterator(path)
                      for value in event.summary.value if value.tag == tag)
    assert steps_of(os.path.join(tmp_path, "train"), "conv1_kernels") == [4, 8]
    assert steps_of(os.path.join(tmp_path, "validation"), "top1_error") == [4, 8]


def test_fine_tuning_loss_and_rate_options_reach_the_run(tiny_data_dir, tmp_path):
    """--class_weights=balanced weighs by the training split's counts (counted here through
    TFDS), --lr_multipliers=conv1:0 keeps conv1 as initialised while the rest trains, and the
    run records both with --label_smoothing."""
    import tensorflow_datasets as tfds
    options = dict(class_weights="balanced", label_smoothing=0.1,
                   lr_multipliers=("conv1:0",), max_steps=3)
    logged = []
    prepared = train.prepare(tiny_config(tmp_path / "init", tiny_data_dir, **options),
                             tf.distribute.get_strategy(), log=logged.append)
    start = {w.path: w.numpy() for w in prepared.state.model.weights}
    labels = [int(x["label"]) for x in tfds.as_numpy(
        tfds.load("alexnet_shapes/tiny", split="train", data_dir=tiny_data_dir))]
    counts = np.bincount(labels, minlength=len(prepared.source.class_names))
    np.testing.assert_allclose(prepared.class_weights,
                               len(labels) / (len(counts) * counts), rtol=1e-6)
    assert any(line.startswith("Class weights (balanced") for line in logged), logged

    train.train(tiny_config(tmp_path / "run", tiny_data_dir, **options), log=lambda line: None)
    model, run, _ = restore_model(str(tmp_path / "run"), "latest")
    for weight in model.weights:
        if weight.path.startswith("conv1"):
            assert_equal(weight.numpy(), start[weight.path])
        else:
            assert not np.array_equal(weight.numpy(), start[weight.path]), weight.path
    recorded = json.load(open(tmp_path / "run" / "run_config.json"))
    assert {k: recorded["train_config"][k] for k in options if k != "max_steps"} == {
        "class_weights": "balanced", "label_smoothing": 0.1, "lr_multipliers": ["conv1:0"]}


def test_an_ema_run_validates_and_is_restored_with_its_averaged_weights(tiny_data_dir, tmp_path):
    """--ema: the checkpoint holds the averages beside the weights; the tools' restore gives the
    averages, the run's own weights stay in the checkpoint for a resume, and validation says
    which it scored (the averaging itself: test_optimizer.py, against numpy)."""
    from alexnet_tf.training import state
    logged = []
    train.train(tiny_config(tmp_path, tiny_data_dir, ema=0.5, max_steps=3, log_steps=1),
                log=logged.append)
    assert any("the averaged weights)" in line for line in logged if "validation" in line)
    path = RunDir(str(tmp_path)).checkpoint("latest")
    names = [n for n, _ in tf.train.list_variables(path) if n.startswith("averages/")]
    model, run, _ = restore_model(str(tmp_path), "latest")
    assert len(names) == len(model.trainable_variables) == 30   # 15 layers, kernel and bias
    for i, variable in enumerate(model.trainable_variables):
        assert_equal(variable.numpy(),
                     tf.train.load_variable(path, f"averages/{i}/.ATTRIBUTES/VARIABLE_VALUE"))
    raw = build_alexnet(run.num_classes, run.config.model, devices=None)
    state.restore_weights(raw, path)
    assert not all(np.array_equal(a.numpy(), b.numpy())
                   for a, b in zip(raw.trainable_variables, model.trainable_variables))


def test_unfreezing_at_an_epoch_trains_every_layer_from_then_and_resumes_exactly(
        tiny_data_dir, tmp_path):
    """--train_layers=fc8 --unfreeze_at=2 (5 steps an epoch): conv1 is as initialised at the end
    of epoch 1 and trained after; a run stopped before the switch and again after it ends with
    the same losses and checkpoint as an uninterrupted one."""
    options = dict(train_layers=("fc8",), unfreeze_at=2, epochs=2, log_steps=1, batch_size=16)
    start = train.prepare(tiny_config(tmp_path / "init", tiny_data_dir, **options),
                          tf.distribute.get_strategy(), log=lambda line: None).state.model
    start = {w.path: w.numpy() for w in start.weights}
    logged = []
    train.train(tiny_config(tmp_path / "a", tiny_data_dir, max_steps=7, **options),
                log=logged.append)
    assert any("every layer trains from now on" in line for line in logged), logged
    for which, unchanged in (("ckpt-5", True), ("ckpt-7", False)):
        model, _, _ = restore_model(str(tmp_path / "a"), str(tmp_path / "a" / which))
        conv1 = model.get_layer("conv1_a").kernel
        assert np.array_equal(conv1.numpy(), start[conv1.path]) == unchanged, which
    for steps in (3, 6, 7):                 # stopped before the switch, and right after it
        train.train(tiny_config(tmp_path / "b", tiny_data_dir, max_steps=steps, **options),
                    log=lambda line: None)

    def losses(folder):
        return {event.step: float(tf.make_ndarray(value.tensor))
                for path in glob.glob(os.path.join(folder, "train", "events.out.tfevents.*"))
                for event in tf.compat.v1.train.summary_iterator(path)
                for value in event.summary.value if value.tag == "loss"}
    assert losses(tmp_path / "a") == losses(tmp_path / "b") and len(losses(tmp_path / "a")) == 7
    a, b = (RunDir(str(tmp_path / n)).checkpoint("latest") for n in "ab")
    for name, _ in tf.train.list_variables(a):
        if name.startswith(("model/", "optimizer/")):
            assert_equal(tf.train.load_variable(a, name), tf.train.load_variable(b, name), name)


def parse_epochs(text):
    return config_lib.parse_per_precision("epochs", text, int)


def test_parse_epochs():
    assert parse_epochs("90") == (90, ())
    assert parse_epochs("14,float32:4") == (14, (("float32", 4),))
    assert parse_epochs(" float32:4 , 14,bfloat16:20") == (14, (("float32", 4),
                                                                ("bfloat16", 20)))
    config = TrainConfig(model_dir="x", epochs=14, by_precision=(("float32", "epochs", 4),))
    assert (config.for_precision("float32").epochs, config.for_precision("bfloat16").epochs) == \
        (4, 14)
    for bad, message in (("float32:4", "needs a plain number"),
                         ("14,fp8:3", "not a precision"), ("14,15", "two default"),
                         ("14,float32:x", "not a number")):
        with pytest.raises(ValueError, match=message):
            parse_epochs(bad)
    assert config_lib.check(TrainConfig, "epochs", 0) is not None     # 0 epochs: refused


def test_per_precision_settings_follow_the_precision():
    assert config_lib.parse_per_precision("learning_rate", "0.004,float32:0.005", float) == \
        (0.004, (("float32", 0.005),))
    config = TrainConfig(model_dir="x", batch_size=64, learning_rate=0.004, by_precision=(
        ("float32", "batch_size", 32), ("float32", "learning_rate", 0.005)))
    fp32, bf16 = config.for_precision("float32"), config.for_precision("bfloat16")
    assert (fp32.batch_size, fp32.learning_rate, fp32.by_precision) == (32, 0.005, ())
    assert (bf16.batch_size, bf16.learning_rate) == (64, 0.004)
    assert TrainConfig.from_dict(config.to_dict()) == config     # the run file's round trip


# Each class's choices for a training run, by hand: precision and XLA with "auto" (towers
# unplaced), and so the recipe's per-precision epochs below.
CLASS_TRAINING = {"avx2": ("float32", True), "avx512_bf16": ("bfloat16", False),
                  "amx": ("bfloat16", False)}


def test_auto_precision_and_xla_follow_the_cpu_class_and_are_recorded(cpu_class, tiny_data_dir,
                                                                      tmp_path):
    precision, jit = CLASS_TRAINING[cpu_class]
    lines = []
    # Two steps of 4 images: bfloat16 is emulated (slow) on CPUs without it.
    config = tiny_config(tmp_path, tiny_data_dir, mixed_precision="auto", jit_compile="auto",
                         batch_size=4, epochs=3, by_precision=(("float32", "epochs", 2),),
                         max_steps=2)
    metrics = train.train(config, log=lines.append)
    assert np.isfinite(metrics["loss"])
    said = [line for line in lines if line.startswith("precision ")]
    assert said == [f"precision {precision} (auto: " + said[0].split("(auto: ", 1)[1]]
    assert f"XLA {'on' if jit else 'off'} (auto: " in said[0]
    assert any(f"{2 if precision == 'float32' else 3} epochs" in line for line in lines), lines
    with open(os.path.join(tmp_path, "run_config.json")) as f:
        runtime = json.load(f)["runtime"]
    assert (runtime["mixed_precision"], runtime["jit_compile"]) == (precision, jit)
    assert runtime["epochs"] == (2 if precision == "float32" else 3)
    assert runtime["hardware"]["cpu_class"] == cpu_class
    # The checkpoint's weights stay float32 whatever the network computes in.
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path)))
    kernels = [n for n in reader.get_variable_to_shape_map()
               if n.startswith("optimizer/_trainable_variables/")]        # (Keras 3 keeps them there)
    assert kernels and {reader.get_variable_to_dtype_map()[n] for n in kernels} == {tf.float32}


def test_resume_equals_an_uninterrupted_run(tiny_data_dir, tmp_path):
    # Saved at the epoch's end (step 10) and where each run stops; no periodic saves between.
    settings = dict(epochs=2, checkpoint_steps=100)
    straight = tiny_config(tmp_path / "straight", tiny_data_dir, max_steps=12, **settings)
    train.train(straight, log=lambda line: None)
    interrupted = tiny_config(tmp_path / "resumed", tiny_data_dir, max_steps=7, **settings)
    train.train(interrupted, log=lambda line: None)
    lines = []
    train.train(tiny_config(tmp_path / "resumed", tiny_data_dir, max_steps=12, **settings),
                log=lines.append)
    assert lines[0].startswith("Resuming from step 7 (epoch 1)")

    def state(model_dir):
        reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(model_dir)))
        return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
                if "model" in name or "optimizer" in name or "schedule" in name}
    a, b = state(tmp_path / "straight"), state(tmp_path / "resumed")
    assert a.keys() == b.keys() and any("velocity" in k or "optimizer/_variables" in k for k in a)
    for name in a:
        assert_close(a[name], b[name], rtol=1e-5, atol=1e-7, name=name)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data_dir, tmp_path):
    config = tiny_config(tmp_path, tiny_data_dir, learning_rate=1e6, checkpoint_steps=1,
                         model=ModelConfig(devices="none", kernel_init="he", bias_init="zeros"))
    with pytest.raises(train.NonFiniteLoss, match=r"the loss became (nan|inf) at step \d+; "
                                                  "stopped without saving"):
        train.train(config, log=lambda line: None)
    latest = tf.train.latest_checkpoint(str(tmp_path))
    reader = tf.train.load_checkpoint(latest)
    assert latest.endswith("ckpt-1")
    checked = 0
    for name in reader.get_variable_to_shape_map():
        if name.startswith(("model/", "optimizer/")):   # (the schedule's best_error starts at inf)
            value = reader.get_tensor(name)
            if np.issubdtype(np.asarray(value).dtype, np.floating):
                assert np.all(np.isfinite(value)), (latest, name)
                checked += 1
    assert checked >= 16


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
