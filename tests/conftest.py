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


# The slowest files first, so that two workers (--dist loadfile) end together instead of one
# waiting for the other's last long file.
SLOW_FIRST = ("test_study.py", "test_train.py", "test_export.py", "test_storage_faults.py",
              "test_benchmark.py", "test_ownership.py", "test_cli.py", "test_distribute.py",
              "test_applications.py", "test_finetune.py", "test_fuzz.py", "test_caffe.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)
    items.sort(key=rank)                      # stable: the order within a file is kept


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A TFDS data_dir with the built-in dataset's `tiny` config prepared (80 + 40 images)."""
    import tensorflow_datasets as tfds

    import alexnet_tf.shapes_dataset  # noqa: F401  (registers the builder)

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    tfds.builder("alexnet_shapes/tiny", data_dir=data_dir).download_and_prepare()
    return data_dir
