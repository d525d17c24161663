"""Test-session setup: two logical CPU devices, so tower placement is testable without GPUs.

This must run before TensorFlow initialises its devices, which is why it lives
here (pytest imports conftest.py before any test module).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A TFDS data_dir with the built-in dataset's `tiny` config prepared (80 + 40 images)."""
    import tensorflow_datasets as tfds

    import alexnet_tf.shapes_dataset  # noqa: F401  (registers the builder)

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    tfds.builder("alexnet_shapes/tiny", data_dir=data_dir).download_and_prepare()
    return data_dir
