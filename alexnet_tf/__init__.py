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

from alexnet_tf import quiet

# In the alexnet-* commands native libraries' log lines are noise (ALEXNET_TF_VERBOSE=1 shows
# them); a Python program that imports the package sees TensorFlow as usual.
if quiet.wanted():
    quiet.silence_native_stderr()

# Registers the layers and the optimiser with Keras (so `keras.saving.load_model` reads a saved
# AlexNet) and, on TensorFlow, the deployment models' preprocessing. On JAX and PyTorch nothing
# here imports TensorFlow.
import keras  # noqa: E402

from alexnet_tf.model.layers import LocalResponseNormalization  # noqa: E402,F401
from alexnet_tf.training.optimizer import PaperSGD  # noqa: E402,F401

if keras.backend.backend() == "tensorflow":
    from alexnet_tf.serving.deploy import DeployPreprocessing  # noqa: E402,F401
from alexnet_tf.version import __version__  # noqa: E402,F401
_LAZY = {
    "AlexNet": "alexnet_tf.applications",
    "preprocess_input": "alexnet_tf.applications",
    "load_image": "alexnet_tf.applications",
    "decode_predictions": "alexnet_tf.applications",
    "fc7_model": "alexnet_tf.applications",
    "build_alexnet": "alexnet_tf.model.network",
    "grad_cam": "alexnet_tf.analysis.grad_cam",
}
__all__ = ["AlexNet", "preprocess_input", "load_image", "decode_predictions", "fc7_model",
           "PaperSGD", "LocalResponseNormalization", "build_alexnet", "grad_cam"]


def __getattr__(name):
    """`alexnet_tf.AlexNet` etc., imported on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'alexnet_tf' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__():
    return sorted(__all__ + ["__version__"])

