"""build_alexnet against the paper's figure 2, hand-computed shapes and counts."""

import sys

import keras
import numpy as np
import pytest

from alexnet_tf import build_alexnet, LocalResponseNormalization, paper
from helpers import assert_equal

TOWER_LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]


def conv_params(k, c_in, c_out):
    return k * k * c_in * c_out + c_out


def dense_params(n_in, n_out):
    return n_in * n_out + n_out


# Figure 2 written out: each tower's kernels see (same tower) or (both towers).
TWO_TOWER_PARAMS = 2 * (conv_params(11, 3, 48) + conv_params(5, 48, 128) + conv_params(3, 256, 192)
                        + conv_params(3, 192, 192) + conv_params(3, 192, 128)
                        + dense_params(6 * 6 * 256, 2048) + dense_params(4096, 2048)) \
    + dense_params(4096, 1000)
ONE_TOWER_PARAMS = (conv_params(11, 3, 96) + conv_params(5, 96, 256) + conv_params(3, 256, 384)
                    + conv_params(3, 384, 384) + conv_params(3, 384, 256)
                    + dense_params(9216, 4096) + dense_params(4096, 4096) + dense_params(4096, 1000))


def structure(num_classes=1000, **kwargs):
    """A network for its shapes, names and counts only: zeros, no weights drawn (0.5 s each)."""
    return build_alexnet(num_classes, devices=None, initialize=False, **kwargs)


@pytest.fixture(scope="module")
def model():
    return build_alexnet(devices=None, seed=7)


def test_hand_counts_are_the_papers_numbers():
    assert TWO_TOWER_PARAMS == paper.PARAMS_TWO_TOWERS == 60_965_224
    assert ONE_TOWER_PARAMS == paper.PARAMS_ONE_TOWER == 62_378_344


def test_two_tower_parameter_count(model):
    assert model.count_params() == TWO_TOWER_PARAMS
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == TWO_TOWER_PARAMS


@pytest.mark.parametrize("kwargs,expected", [
    ({"towers": 1}, ONE_TOWER_PARAMS),
    ({"lrn": False}, TWO_TOWER_PARAMS),
    ({"pool_size": 2, "pool_stride": 2}, TWO_TOWER_PARAMS),
    ({"activation": "tanh"}, TWO_TOWER_PARAMS),
    ({"image_size": 227}, TWO_TOWER_PARAMS),
    ({"num_classes": 10}, TWO_TOWER_PARAMS - dense_params(4096, 1000) + dense_params(4096, 10)),
])
def test_variant_parameter_counts(kwargs, expected):
    assert structure(**kwargs).count_params() == expected


def test_every_activation_shape(model):
    expected = {  # per tower for two towers; the paper's totals are twice the channels
        "conv1_a": (55, 55, 48), "pool1_a": (27, 27, 48),
        "conv2_a": (27, 27, 128), "pool2_a": (13, 13, 128),
        "conv3_a": (13, 13, 192), "conv4_a": (13, 13, 192), "conv5_a": (13, 13, 128),
        "pool5_a": (6, 6, 128), "fc6_a": (2048,), "fc7_a": (2048,), "fc8": (1000,),
    }
    for name, shape in expected.items():
        assert tuple(model.get_layer(name).output.shape[1:]) == shape, name
        if name != "fc8":
            other = model.get_layer(name.replace("_a", "_b"))
            assert tuple(other.output.shape[1:]) == shape, name
    # The paper's totals: both towers side by side.
    paper_totals = [("conv1", 96, 55), ("pool1", 96, 27), ("conv2", 256, 27), ("pool2", 256, 13),
                    ("conv3", 384, 13), ("conv4", 384, 13), ("conv5", 256, 13), ("pool5", 256, 6)]
    for name, channels, side in paper_totals:
        a, b = (model.get_layer(f"{name}_{t}").output.shape for t in "ab")
        assert (a[1], a[2], a[3] + b[3]) == (side, side, channels), name
    out = model(np.zeros((2, 224, 224, 3), np.float32))
    assert out.shape == (2, 1000)


def test_227_input_needs_no_padding():
    model = structure(image_size=227)
    assert "conv1_pad" not in [layer.name for layer in model.layers]
    assert tuple(model.get_layer("conv1_a").output.shape[1:]) == (55, 55, 48)
    assert tuple(model.get_layer("pool5_b").output.shape[1:]) == (6, 6, 128)


def test_non_overlapping_pooling_keeps_the_shapes():
    model = structure(pool_size=2, pool_stride=2)
    assert tuple(model.get_layer("pool1_a").output.shape[1:]) == (27, 27, 48)
    assert tuple(model.get_layer("pool5_a").output.shape[1:]) == (6, 6, 128)
    assert model.get_layer("pool1_a").pool_size == (2, 2)


@pytest.mark.parametrize("image_size", [224, 227])
def test_ceil_pooling_gives_the_same_sizes_for_overlapping_pooling(image_size):
    # 55 -> ceil((55 - 3) / 2) + 1 = 27 -> ceil((27 - 3) / 2) + 1 = 13 -> ceil((13 - 3) / 2) + 1 = 6
    for rounding in ("floor", "ceil"):
        model = structure(10, image_size=image_size, pool_rounding=rounding)
        sizes = [model.get_layer(f"pool{i}_a").output.shape[1] for i in (1, 2, 5)]
        assert sizes == [27, 13, 6], rounding
    # 2/2 pooling: 55 -> ceil(53 / 2) + 1 = 28 -> 14 -> 7, where floor gives 27 -> 13 -> 6.
    model = structure(10, pool_size=2, pool_stride=2, pool_rounding="ceil")
    assert [model.get_layer(f"pool{i}_a").output.shape[1] for i in (1, 2, 5)] == [28, 14, 7]


def test_lrn_across_towers_sees_the_other_towers_maps():
    model = structure(10, lrn_across_towers=True)
    lrn = model.get_layer("lrn1_b")
    assert lrn.input.shape[-1] == 96 and lrn.output.shape[-1] == 48
    assert lrn.output_channels == (48, 96)
    assert model.count_params() == structure(10).count_params()


def test_layer_names_and_connectivity(model):
    kernels = {w.path: tuple(w.shape) for w in model.trainable_weights}
    expected = {
        "conv1": (11, 11, 3, 48), "conv2": (5, 5, 48, 128),      # conv2: same tower only
        "conv3": (3, 3, 256, 192),                                # conv3: BOTH towers
        "conv4": (3, 3, 192, 192), "conv5": (3, 3, 192, 128),    # same tower only
        "fc6": (9216, 2048), "fc7": (4096, 2048),                 # both towers
    }
    for base, shape in expected.items():
        for tower in "ab":
            assert kernels[f"{base}_{tower}/kernel"] == shape
            assert kernels[f"{base}_{tower}/bias"] == (shape[-1],)
    assert kernels["fc8/kernel"] == (4096, 1000)
    assert len(kernels) == 2 * 2 * 7 + 2
    # conv2_a reads pool1_a only; conv3_a reads both towers' pool2.
    out = {name: model.get_layer(name).output for name in ("pool1_a", "pool2_a", "pool2_b")}
    assert model.get_layer("conv2_a").input is out["pool1_a"]
    assert model.get_layer("conv2_b").input is not out["pool1_a"]
    concat3 = model.get_layer("concat3_b")
    assert [t is out[name] for t, name in zip(concat3.input, ["pool2_a", "pool2_b"])] == [True, True]
    assert model.get_layer("conv3_b").input is concat3.output


def test_one_tower_names_drop_the_suffix():
    names = {layer.name for layer in structure(towers=1).layers}
    assert {"conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"} <= names
    assert not any(name.endswith(("_a", "_b")) for name in names)


def test_ablation_switches_change_the_layers():
    no_lrn = structure(lrn=False)
    assert not any(isinstance(layer, LocalResponseNormalization) for layer in no_lrn.layers)
    tanh = structure(activation="tanh")
    assert tanh.get_layer("conv1_a").activation is keras.activations.tanh
    assert tanh.get_layer("fc8").activation is keras.activations.linear
    relu = structure()
    lrn = relu.get_layer("lrn1_a")
    assert (lrn.n, lrn.k, lrn.alpha, lrn.beta) == (5, 2.0, 1e-4, 0.75)
    assert relu.get_layer("dropout6_a").rate == 0.5


def test_paper_initialisation_statistics(model):
    bias_one = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    for weight in model.trainable_weights:
        values = weight.numpy().ravel()
        layer, kind = weight.path.split("/")
        if kind == "kernel":
            # N(0, 0.01): the sample std is within a few standard errors of 0.01.
            n = values.size
            assert abs(values.mean()) < 5 * 0.01 / np.sqrt(n), weight.path
            assert abs(values.std() - 0.01) < 5 * 0.01 / np.sqrt(2 * n) + 1e-5, weight.path
        else:
            expected = 1.0 if layer.split("_")[0] in bias_one else 0.0
            assert_equal(values, expected, weight.path)


def test_other_initialisers_are_selectable():
    model = build_alexnet(devices=None, kernel_init="he", bias_init="zeros", seed=1)
    fc6 = model.get_layer("fc6_a").kernel.numpy()
    assert abs(fc6.std() - np.sqrt(2.0 / 9216)) < 0.05 * np.sqrt(2.0 / 9216)  # He: sqrt(2/fan_in)
    assert np.all(model.get_layer("conv2_a").bias.numpy() == 0.0)


def test_seed_makes_weights_reproducible_and_towers_differ():
    first, second = (build_alexnet(devices=None, seed=3, num_classes=10) for _ in range(2))
    for w1, w2 in zip(first.weights, second.weights):
        assert_equal(w1.numpy(), w2.numpy())
    assert not np.array_equal(first.get_layer("conv1_a").kernel.numpy(),
                              first.get_layer("conv1_b").kernel.numpy())


def test_a_network_whose_weights_are_set_next_starts_at_zero_with_its_initialisers_config():
    drawn, zeros = (build_alexnet(devices=None, seed=3, num_classes=10, initialize=initialize)
                    for initialize in (True, False))
    assert [w.path for w in zeros.weights] == [w.path for w in drawn.weights]
    assert all(not np.any(w.numpy()) for w in zeros.weights)
    assert zeros.get_config() == drawn.get_config()          # the paper's initialisers, seeded
    # A clone draws from that config: N(0, 0.01) kernels, conv2's bias 1 (section 5).
    clone = keras.models.clone_model(zeros)
    assert abs(clone.get_layer("fc6_a").kernel.numpy().std() - 0.01) < 0.0005
    assert np.all(clone.get_layer("conv2_a").bias.numpy() == 1.0)


def test_dropout_only_in_training(model):
    x = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype(np.float32)
    np.testing.assert_array_equal(model(x, training=False).numpy(), model(x, training=False).numpy())
    assert not np.allclose(model(x, training=True).numpy(), model(x, training=False).numpy())


def test_softmax_output_sums_to_one():
    model = build_alexnet(devices=None, num_classes=10, include_softmax=True)
    probs = model(np.ones((3, 224, 224, 3), np.float32)).numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert probs.dtype == np.float32


def test_keras_file_round_trip_gives_identical_outputs(model, tmp_path):
    path = tmp_path / "alexnet.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("lrn2_b"), LocalResponseNormalization)
    x = np.random.default_rng(1).normal(size=(2, 224, 224, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), model(x, training=False).numpy())


@pytest.mark.parametrize("kwargs,message", [
    ({"towers": 3}, "towers must be one of 1, 2"),
    ({"activation": "sigmoid"}, "activation must be one of relu, tanh"),
    ({"image_size": 256}, "image_size must be one of 224, 227"),
    ({"kernel_init": "xavier"}, "kernel_init must be one of paper, he, glorot"),
    ({"num_classes": 0}, "num_classes must be at least 1"),
])
def test_bad_arguments_get_one_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_alexnet(devices=None, **kwargs)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
