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
