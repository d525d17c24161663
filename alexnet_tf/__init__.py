"""alexnet_tf: the AlexNet paper (Krizhevsky, Sutskever & Hinton, 2012) in TensorFlow/Keras."""

from alexnet_tf.layers import LocalResponseNormalization
from alexnet_tf.models import build_alexnet

__all__ = ["LocalResponseNormalization", "build_alexnet"]
__version__ = "0.1.0"
