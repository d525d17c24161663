"""alexnet_tf: the AlexNet paper (Krizhevsky, Sutskever & Hinton, 2012) in TensorFlow/Keras.

The Python API, in the style of `keras.applications`:

    import alexnet_tf
    model = alexnet_tf.AlexNet(weights="bvlc_alexnet")
    x = alexnet_tf.preprocess_input(alexnet_tf.load_image("cat.jpg")[None])
    alexnet_tf.decode_predictions(model.predict(x))

Importing the package registers its Keras layers and optimiser (so
`keras.models.load_model` reads a saved AlexNet); everything else is imported
on first use.
"""

import os
import sys


def _is_command():
    """Whether this process is one of the alexnet-* commands (a console script or `-m`)."""
    if os.path.basename(sys.argv[0] if sys.argv else "").startswith("alexnet-"):
        return True
    argv = getattr(sys, "orig_argv", [])
    return any(a == "-m" and b.startswith("alexnet_tf.cli") for a, b in zip(argv, argv[1:]))


def _quiet_start_up():
    """Sends TensorFlow's C++ start-up log lines to /dev/null until absl's app has initialised.

    They go to file descriptor 2 directly (TF_CPP_MIN_LOG_LEVEL does not reach them), so fd 2
    points at /dev/null meanwhile while Python's own `sys.stderr` (errors, warnings,
    tracebacks) still writes to the terminal.
    """
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()
    os.dup2(null, 2)
    os.close(null)
    python_stderr = sys.stderr
    sys.stderr = open(os.dup(saved), "w", buffering=1, errors="backslashreplace")

    def restore():
        import tensorflow as tf
        tf.config.list_physical_devices()        # the device probe (cuInit's line) happens here
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr = python_stderr

    from absl import app
    app.call_after_init(restore)


# In the alexnet-* commands TensorFlow's start-up lines are noise (ALEXNET_TF_VERBOSE=1 shows
# them); a Python program that imports the package sees TensorFlow as usual.
if _is_command() and os.environ.get("ALEXNET_TF_VERBOSE") != "1":
    _quiet_start_up()

from alexnet_tf.layers import LocalResponseNormalization  # noqa: E402,F401  (registers the layers)
from alexnet_tf.optimizer import PaperSGD  # noqa: E402,F401  (registers the optimiser)

__version__ = "0.1.0"
_LAZY = {
    "AlexNet": "alexnet_tf.applications",
    "preprocess_input": "alexnet_tf.applications",
    "load_image": "alexnet_tf.applications",
    "decode_predictions": "alexnet_tf.applications",
    "fc7_model": "alexnet_tf.applications",
    "build_alexnet": "alexnet_tf.models",
}
__all__ = ["AlexNet", "preprocess_input", "load_image", "decode_predictions", "fc7_model",
           "PaperSGD", "LocalResponseNormalization", "build_alexnet"]


def __getattr__(name):
    """`alexnet_tf.AlexNet` etc., imported on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'alexnet_tf' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__():
    return sorted(__all__ + ["__version__"])

