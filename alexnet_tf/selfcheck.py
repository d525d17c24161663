"""A self-check of the network on whatever device the Keras backend sees: CPU, GPU or TPU.

    KERAS_BACKEND=jax python -m alexnet_tf.selfcheck          # or tensorflow, torch

Needs only the network's dependencies and one backend (no TensorFlow on JAX or PyTorch):

1. forward: a small network of the package's layers (convolutions, LRN, Caffe's ceil pooling,
   a dense softmax) with weights drawn from a fixed numpy seed, against the outputs stored in
   `selfcheck_reference.npz` (the suite checks that file against a numpy forward pass);
2. training: AlexNet (10 classes, He init) fits one batch of random images for a few steps
   with the paper's optimiser in float32 and in mixed bfloat16; its loss must fall;
3. speed: inference images/s at batch 1, 32 and --batch_size, training images/s at
   --batch_size, with the device's name.

Prints one line per check and the table; exits 1 when a check fails, 0 otherwise.
With --fail_fast it stops at the first failed check (no training or timing after it).
"""

import argparse
import os
import sys
import time

import keras
import numpy as np

from alexnet_tf import paper
from alexnet_tf.model.layers import (LocalResponseNormalization, PlacedConv2D, PlacedDense,
                                     PlacedMaxPooling2D)
from alexnet_tf.model.network import build_alexnet
from alexnet_tf.training.optimizer import PaperSGD

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "selfcheck_reference.npz")
SEED, SIDE, CLASSES = 2012, 71, 10
FORWARD_TOLERANCE = 1e-4          # relative to the largest output, float32 on any device
LEARNING_RATE = 1e-4              # fits one batch of random images in a few steps, any batch size


def small_network():
    """conv 11x11/4 (16) -> LRN -> ceil max-pool 3/2 -> conv 5x5 (24) -> LRN -> max-pool 3/2 ->
    dense softmax (10), float32, at 71x71 (conv1 gives 16x16, where ceil pooling adds a window):
    every layer kind of AlexNet, small."""
    inputs = keras.Input((SIDE, SIDE, 3))
    x = PlacedConv2D(16, 11, strides=4, activation="relu", name="conv1")(inputs)
    x = LocalResponseNormalization(n=5, k=2.0, alpha=1e-3, beta=0.75, name="lrn1")(x)
    x = PlacedMaxPooling2D(3, 2, rounding="ceil", name="pool1")(x)
    x = PlacedConv2D(24, 5, padding="same", activation="relu", name="conv2")(x)
    x = LocalResponseNormalization(n=5, k=1.0, alpha=1e-2, beta=0.75, name="lrn2")(x)
    x = PlacedMaxPooling2D(3, 2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = PlacedDense(CLASSES, activation="softmax", name="fc")(x)
    return keras.Model(inputs, outputs, name="selfcheck")


def small_network_weights(model):
    """The weights from numpy's generator at SEED, layer by layer: kernels N(0, 1/fan_in),
    biases N(0, 0.1)."""
    rng = np.random.default_rng(SEED)
    values = []
    for variable in model.weights:
        shape = tuple(variable.shape)
        scale = 1.0 / np.sqrt(np.prod(shape[:-1])) if len(shape) > 1 else 0.1
        values.append((rng.normal(size=shape) * scale).astype(np.float32))
    return values


def small_network_inputs():
    """Two images [2, 71, 71, 3], float32 in [-1, 1), from numpy's generator at SEED + 1."""
    return np.random.default_rng(SEED + 1).uniform(-1, 1, (2, SIDE, SIDE, 3)).astype(np.float32)


def check_forward():
    """(passed, message): the small network's probabilities against the stored reference."""
    model = small_network()
    model.set_weights(small_network_weights(model))
    got = np.asarray(model.predict(small_network_inputs(), verbose=0))
    with np.load(REFERENCE) as stored:
        expected = stored["probabilities"]
    difference = float(np.abs(got - expected).max())
    passed = difference <= FORWARD_TOLERANCE * float(np.abs(expected).max())
    return passed, f"largest difference {difference:.2e} from the stored reference"


def _training_model():
    model = build_alexnet(CLASSES, kernel_init="he", bias_init="zeros", dropout_rate=0.0,
                          devices=None, seed=SEED)
    model.compile(optimizer=PaperSGD(LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _batch(size):
    rng = np.random.default_rng(SEED + 2)
    images = rng.normal(size=(size, paper.IMAGE_SIZE, paper.IMAGE_SIZE, 3)).astype(np.float32)
    return images, rng.integers(0, CLASSES, size)


def check_training(policy, steps, batch_size):
    """(passed, message, images/s): `steps` steps on one batch under `policy`; the loss falls."""
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        model = _training_model()
        x, y = _batch(batch_size)
        before = float(model.evaluate(x, y, batch_size=batch_size, verbose=0))
        model.train_on_batch(x, y)                        # the first step compiles
        start = time.perf_counter()
        for _ in range(steps - 1):
            model.train_on_batch(x, y)
        seconds = time.perf_counter() - start
        after = float(model.evaluate(x, y, batch_size=batch_size, verbose=0))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    passed = np.isfinite(after) and after < before
    rate = batch_size * (steps - 1) / seconds                # steps >= 2 (main checks it)
    return passed, f"loss {before:.3f} -> {after:.3f} after {steps} steps", rate


def inference_model():
    """AlexNet as inference_rate times it: float32, 1000 classes."""
    return build_alexnet(paper.NUM_CLASSES, devices=None, seed=SEED)


def inference_rate(model, batch_size, repeats):
    """Images/s of `model`'s forward pass at `batch_size`."""
    x = _batch(batch_size)[0]
    model.predict_on_batch(x)                             # compiles
    start = time.perf_counter()
    for _ in range(repeats):
        np.asarray(model.predict_on_batch(x))
    return batch_size * repeats / (time.perf_counter() - start)


def device_name():
    """What the backend computes on, e.g. 'cpu', 'cuda:0 (NVIDIA A100-SXM4-40GB)', 'TPU v4'."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        device = jax.devices()[0]
        return f"{device.platform}:{device.id} ({device.device_kind})"
    if backend == "torch":
        import torch
        if torch.cuda.is_available():
            return f"cuda:0 ({torch.cuda.get_device_name(0)})"
        return "cpu"
    if backend == "tensorflow":
        import tensorflow as tf
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"GPU:0 ({details.get('device_name', 'GPU')})"
        return "CPU:0"
    return backend


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m alexnet_tf.selfcheck",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=128,
                        help="the training batch and the largest inference batch (128)")
    parser.add_argument("--steps", type=int, default=4, help="training steps per precision (4)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed inference batches per size (5)")
    parser.add_argument("--fail_fast", action="store_true",
                        help="stop at the first failed check, before the training and timing "
                             "that follow it")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.steps < 2 or args.repeats < 1:
        parser.error("--batch_size and --repeats must be >= 1, --steps >= 2")
    print(f"alexnet_tf self-check: Keras {keras.__version__} on {keras.backend.backend()}, "
          f"device {device_name()}", flush=True)
    failed, rates = [], {}

    def report(name, passed, message):
        print(f"  {name:<28} {'ok' if passed else 'FAILED'}: {message}", flush=True)
        if not passed:
            failed.append(name)

    report("forward (small network)", *check_forward())
    for policy in ("float32", "mixed_bfloat16"):
        if failed and args.fail_fast:
            break
        passed, message, rates[policy] = check_training(policy, args.steps, args.batch_size)
        report(f"training ({policy})", passed, message)
    if failed and args.fail_fast:
        return _failed(failed)
    model = inference_model()
    print(f"\n  {'what':<34} {'batch':>6} {'images/s':>10}")
    for batch in sorted({1, 32, args.batch_size}):
        print(f"  {'inference, float32':<34} {batch:>6} "
              f"{inference_rate(model, batch, args.repeats):>10.1f}", flush=True)
    for policy, rate in rates.items():
        print(f"  {'training, ' + policy:<34} {args.batch_size:>6} {rate:>10.1f}")
    if failed:
        return _failed(failed)
    print("\nself-check passed")
    return 0


def _failed(names):
    print(f"\nself-check FAILED: {', '.join(names)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
