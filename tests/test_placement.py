"""The two towers really run on two devices (two logical CPUs here, see conftest.py)."""

import re
import sys

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import build_alexnet
from alexnet_tf.model.network import resolve_tower_devices

LAYER_SCOPE = re.compile(r"/([a-z]+\d)_([ab])(?:_\d+)?/")
COMPUTE_OPS = {"Conv2D", "MatMul", "_FusedConv2D", "_FusedMatMul", "LRN", "MaxPool", "Square",
               "Rsqrt", "BiasAdd", "Relu"}


def _device_index(device_string):
    spec = tf.DeviceSpec.from_string(device_string)
    return spec.device_type, spec.device_index


@pytest.fixture(scope="module")
def placed_model():
    return build_alexnet(num_classes=10, devices=("/CPU:0", "/CPU:1"), seed=0)


def test_variables_live_on_their_towers_device(placed_model):
    for weight in placed_model.weights:
        layer = weight.path.split("/")[0]
        expected = 1 if layer.endswith("_b") else 0   # fc8 sits with tower a
        assert _device_index(weight.value.device) == ("CPU", expected), weight.path


def test_traced_forward_pass_places_tower_ops(placed_model):
    forward = tf.function(lambda x: placed_model(x, training=True))
    graph = forward.get_concrete_function(tf.TensorSpec([2, 224, 224, 3], tf.float32)).graph
    seen = {"_a": set(), "_b": set()}
    for op in graph.get_operations():
        # Traced name scopes look like "alexnet_1/conv3_b_1/convolution".
        match = LAYER_SCOPE.search(op.name)
        if not match or op.type not in COMPUTE_OPS:
            continue
        tower = "_" + match.group(2)
        seen[tower].add(match.group(1))
        assert _device_index(op.device) == ("CPU", 1 if tower == "_b" else 0), op.name
    # Both towers traced their convolutions, LRN (TF's kernel, or the band-matrix form some
    # CPUs get), pooling and fully connected layers, each op on its tower's device.
    layers = {"conv1", "lrn1", "pool1", "conv2", "lrn2", "pool2", "conv3", "conv4", "conv5",
              "pool5", "fc6", "fc7"}
    assert layers <= seen["_b"], seen
    assert layers <= seen["_a"], seen


def test_placed_model_computes_the_same_as_unplaced(placed_model):
    unplaced = build_alexnet(num_classes=10, devices=None, seed=0)
    x = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype(np.float32)
    np.testing.assert_allclose(placed_model(x, training=False).numpy(),
                               unplaced(x, training=False).numpy(), rtol=1e-5, atol=1e-6)


def test_resolve_devices():
    assert resolve_tower_devices(None) == (None, None)
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    # "auto": the first two GPUs when there are two, else no placement (TF places everything).
    assert resolve_tower_devices("auto") == (tuple(gpus[:2]) if len(gpus) >= 2 else (None, None))
    assert resolve_tower_devices("/CPU:0,/CPU:1") == ("/CPU:0", "/CPU:1")
    assert resolve_tower_devices(("/cpu:1", "/device:CPU:0")) == ("/cpu:1", "/device:CPU:0")
    with pytest.raises(ValueError, match="tower device '/GPU:1' does not exist here"):
        resolve_tower_devices(("/CPU:0", "/GPU:1"))
    with pytest.raises(ValueError, match="exactly two devices"):
        resolve_tower_devices(("/CPU:0",))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
