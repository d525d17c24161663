"""alexnet_tf: the AlexNet paper as a TensorFlow/Keras training, evaluation and serving tool."""

import re

from setuptools import find_packages, setup

# The version is alexnet_tf/version.py's, read as text (the package needs TensorFlow to import).
VERSION = re.search(r'__version__ = "([^"]+)"', open("alexnet_tf/version.py").read()).group(1)

# Versions tested together (2026-11). Users with NVIDIA GPUs: pip install -e '.[gpu]'.
TENSORFLOW = "tensorflow==2.21.0"
DEPLOY = ["ai-edge-litert==2.3.0", "onnxruntime==1.32.0", "tf2onnx==1.17.0", "onnx==1.23.2"]
# Keras' other backends for the network and the Python API (KERAS_BACKEND=jax or torch). The
# PyTorch pin is the CPU build where the registry has one (2.13.0+cpu satisfies ==2.13.0).
JAX = ["jax==0.10.2", "jaxlib==0.10.2"]
TORCH = ["torch==2.13.0"]

setup(
    name="alexnet_tf",
    version=VERSION,
    description="AlexNet (Krizhevsky, Sutskever & Hinton, 2012) in TensorFlow/Keras",
    packages=find_packages(include=["alexnet_tf", "alexnet_tf.*"]),
    # The synset list, beside imagenet.py; the self-check's reference outputs.
    package_data={"alexnet_tf.data": ["*.txt"], "alexnet_tf": ["selfcheck_reference.npz"]},
    python_requires=">=3.10",
    install_requires=[
        TENSORFLOW,
        "keras==3.15.1",
        "tensorflow-datasets==4.9.10",
        "absl-py==2.5.1",
        "tensorboard==2.21.0",
        # tensorflow-datasets needs it (through etils[epath]) but does not declare it.
        "importlib_resources==7.1.0",
        "pillow==13.0.0",   # text in the figure 4 panels
        "protobuf==7.36.2",  # alexnet-import reads Caffe's files (TensorFlow needs it too)
    ],
    extras_require={
        # LiteRT and ONNX exports: the converters and the runtimes that check them.
        "deploy": DEPLOY,
        "jax": JAX,
        "torch": TORCH,
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "pytest-timeout==2.4.0"] + DEPLOY + JAX
                + TORCH,
        "gpu": [TENSORFLOW.replace("tensorflow", "tensorflow[and-cuda]")],
    },
    entry_points={
        "console_scripts": [
            "alexnet-summary=alexnet_tf.cli.summary:run",
            "alexnet-train=alexnet_tf.cli.train:run",
            "alexnet-eval=alexnet_tf.cli.evaluate:run",
            "alexnet-benchmark=alexnet_tf.cli.benchmark:run",
            "alexnet-export=alexnet_tf.cli.export:run",
            "alexnet-predict=alexnet_tf.cli.predict:run",
            "alexnet-retrieve=alexnet_tf.cli.retrieve:run",
            "alexnet-figures=alexnet_tf.cli.figures:run",
            "alexnet-import=alexnet_tf.cli.import_caffe:run",
            "alexnet-study=alexnet_tf.cli.study:run",
        ],
    },
)
