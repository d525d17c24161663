"""alexnet_tf: the AlexNet paper (Krizhevsky, Sutskever & Hinton, 2012) in TensorFlow/Keras."""

__all__ = ["LocalResponseNormalization", "build_alexnet"]
__version__ = "0.1.0"
_HOMES = {"LocalResponseNormalization": "alexnet_tf.layers", "build_alexnet": "alexnet_tf.models"}


def __getattr__(name):
    """`alexnet_tf.build_alexnet` etc., imported on first use (TensorFlow loads only then)."""
    if name not in _HOMES:
        raise AttributeError(f"module 'alexnet_tf' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(_HOMES[name]), name)
