"""Fine-tuning: --init_from a 10-class run, --train_layers=fc8 on a 3-class image folder."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf import paper
from alexnet_tf.config import frozen_layers, ModelConfig, TrainConfig
from alexnet_tf.serving import export
from alexnet_tf.training import finetune, state, train
from alexnet_tf.training.restore import restore_model
from alexnet_tf.training.rundir import RunDir
from helpers import assert_equal

COLOURS = {"blue": (40, 60, 200), "green": (40, 180, 60), "red": (200, 40, 40)}


def colour_folder(root, per_class):
    """ROOT/<split>/<colour>/*.png: noisy images of one dominant colour each."""
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for name, rgb in COLOURS.items():
            os.makedirs(os.path.join(root, split, name))
            for i in range(count):
                pixels = np.clip(np.asarray(rgb) + rng.normal(0, 40, (48, 64, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(
                    os.path.join(root, split, name, f"{i}.png"))


def run_config(model_dir, **settings):
    return TrainConfig(model_dir=str(model_dir), batch_size=8, log_steps=5, seed=1,
                       input_scale="std", mixed_precision="float32", jit_compile="false",
                       lr_schedule="cosine", **settings)


def weights_by_layer(model_dir, which="latest"):
    model, _, _ = restore_model(model_dir, which)
    return {layer.name: [w.numpy() for w in layer.weights] for layer in model.layers
            if layer.weights}


def test_fine_tuning_fc8_keeps_the_rest_bit_identical_learns_resumes_and_exports(
        tiny_data_dir, tmp_path):
    # The source: a short quick-start-like run on the built-in dataset (10 classes).
    source = tmp_path / "source"
    train.train(run_config(source, dataset="alexnet_shapes/tiny", data_dir=tiny_data_dir,
                           epochs=1, max_steps=3, learning_rate=0.001,
                           model=ModelConfig(devices="none", kernel_init="he", bias_init="zeros",
                                             dropout_rate=0.0)), log=lambda line: None)
    root = str(tmp_path / "colours")
    colour_folder(root, {"train": 16, "validation": 6})

    lines = []
    tuned = tmp_path / "tuned"
    config = run_config(tuned, dataset=f"image_folder:{root}", epochs=4, max_steps=12,
                        learning_rate=0.01, init_from=str(source), train_layers=("fc8",),
                        model=ModelConfig(devices="none"))
    first = train.train(config, log=lines.append)
    text = "\n".join(lines)
    assert "Initialised from" in text and "freshly initialised fc8 " in text
    assert "(10 classes there, 3 here)" in text
    assert "Frozen (not trained): conv1, conv2, conv3, conv4, conv5, fc6, fc7" in text
    # The source's network options were taken (its He init is irrelevant; dropout is ours).
    run = RunDir(str(tuned)).read()
    assert run.config.input_scale == "std" and run.num_classes == 3
    before, after = weights_by_layer(source, "latest"), weights_by_layer(tuned)
    for name, values in before.items():
        if name != "fc8":
            for old, new in zip(values, after[name]):
                assert_equal(old, new)           # bit-identical
    assert after["fc8"][0].shape == (4096, 3)
    # No velocity for frozen variables: the optimiser holds fc8's kernel and bias only.
    reader = tf.train.load_checkpoint(RunDir(str(tuned)).latest_checkpoint())
    slots = [shape for key, shape in reader.get_variable_to_shape_map().items()
             if key.startswith("optimizer/_variables/") and len(shape) >= 1]
    assert sorted(map(tuple, slots)) == [(3,), (4096, 3)]
    # Stored once: the 3-class network (the paper's count, fc8 of 3 classes), fc8's velocities,
    # and a few counters and RNG states; not the frozen weights a second time.
    network = paper.PARAMS_TWO_TOWERS - 4097 * 1000 + 4097 * 3
    stored = sum(int(np.prod(shape)) for key, shape in reader.get_variable_to_shape_map().items()
                 if key != "_CHECKPOINTABLE_OBJECT_GRAPH")
    assert 0 <= stored - network - 4097 * 3 < 64, stored
    assert first["top1_error"] < 0.4, text       # chance: 2/3 top-1 error, held-out images

    # Resume: more steps continue from the checkpoint and do not load the source again.
    lines.clear()
    final = train.train(run_config(tuned, dataset=f"image_folder:{root}", epochs=4, max_steps=16,
                                   learning_rate=0.01, init_from=str(source),
                                   train_layers=("fc8",), model=ModelConfig(devices="none")),
                        log=lines.append)
    text = "\n".join(lines)
    assert "Resuming from step 12" in text and "Initialised from" not in text
    assert final["top1_error"] < 0.4, text
    after = weights_by_layer(tuned)
    np.testing.assert_array_equal(before["conv1_a"][0], after["conv1_a"][0])
    # Export serves the three classes.
    path = export.export(str(tuned), str(tmp_path / "exports"), which="latest")
    names = open(os.path.join(path, "assets", export.CLASS_NAMES_ASSET)).read().split()
    assert names == sorted(COLOURS)


def test_train_layers_and_freeze_name_what_does_not_train():
    assert frozen_layers(("fc8",), ()) == ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6",
                                          "fc7")
    assert frozen_layers((), ("conv1", "conv2")) == ("conv1", "conv2")
    from alexnet_tf.model.network import build_alexnet, freeze
    model = build_alexnet(5, devices=None)
    freeze(model, frozen_layers((), ("conv1", "fc6")))
    frozen = sorted({v.path.split("/")[0] for v in model.non_trainable_weights})
    assert frozen == ["conv1_a", "conv1_b", "fc6_a", "fc6_b"]


def test_a_checkpoint_of_the_earlier_layout_resumes_weights_velocities_and_masks(tmp_path):
    # The earlier layout (before the RNG states were saved alone) stored every non-trainable
    # variable under `rng`: with frozen layers, their weights came first.
    def fresh(seed):                                   # the seed: different initial weights
        config = TrainConfig(train_layers=("fc8",), mixed_precision="float32", seed=seed,
                             model=ModelConfig(devices="none"))
        built = state.build_state(config, tf.distribute.get_strategy(), 3, None, "float32",
                                  total_steps=10, steps_per_epoch=5)
        built.checkpoint = state.checkpoint_of(built.model, built.step, built.epoch,
                                               built.optimizer, built.schedule)
        return built

    old = fresh(1)
    for i, variable in enumerate(state.dropout_states(old.model)):
        variable.assign([7, 100 + i])
    old.step.assign(40)
    old.optimizer.variables[-1].assign(tf.fill(old.optimizer.variables[-1].shape, 0.5))
    written = tf.train.Checkpoint(model=old.model, step=old.step, epoch=old.epoch,
                                  rng=[v.value for v in old.model.non_trainable_variables],
                                  optimizer=old.optimizer, schedule=old.schedule)
    path = written.save(str(tmp_path / "ckpt"))
    assert sum(n.startswith("rng/") for n, _ in tf.train.list_variables(path)) > 4

    new = fresh(2)
    assert not np.array_equal(old.model.weights[0].numpy(), new.model.weights[0].numpy())
    state.restore_checkpoint(new, path)
    assert int(new.step.numpy()) == 40
    for a, b in zip(old.model.weights, new.model.weights):
        assert_equal(a.numpy(), b.numpy())
    assert [list(v.numpy()) for v in state.dropout_states(new.model)] == \
        [[7, 100 + i] for i in range(4)]
    np.testing.assert_array_equal(new.optimizer.variables[-1].numpy(), 0.5)
    # Saved again, in the current layout: the RNG states alone.
    again = new.checkpoint.save(str(tmp_path / "again"))
    assert sum(n.startswith("rng/") for n, _ in tf.train.list_variables(again)) == 4


@pytest.mark.parametrize("path, message", [
    ("missing", "is neither a run directory nor a checkpoint"),
    ("empty_dir", "is not a run directory"),
])
def test_bad_init_from_gets_one_line(path, message, tmp_path):
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(finetune.FineTuneError, match=message):
        finetune.Source.locate(str(tmp_path / path))
