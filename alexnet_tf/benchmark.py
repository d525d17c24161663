"""Speed measurements: each after warm-up, the median of several timed runs.

Used by `alexnet-benchmark` (alexnet_tf/cli/benchmark.py), which prints a table
and writes JSON. Numbers describe the machine they ran on; docs/BENCHMARKS.md
records them with the machine and the command.
"""

import resource
import statistics
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import dataset_stats, export, hardware, input_pipeline, paper, train
from alexnet_tf.models import base_name, build_alexnet
from alexnet_tf.optimizer import PaperSGD

# FLOPs of the two-tower net per 224x224 image (docs/BENCHMARKS.md shows the arithmetic):
# forward = 2 * multiply-accumulates; training = forward + backward (2x forward).
FORWARD_GFLOP = 1.45
TRAIN_GFLOP = 4.14


def median_rate(run, items_per_run, warmup=1, repeats=3):
    """items/s of `run()`: median over `repeats` timed calls after `warmup` untimed ones."""
    for _ in range(warmup):
        run()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(items_per_run / (time.perf_counter() - start))
    return statistics.median(rates)


MATMUL_SIZES = (2048, 4096)


def matmul_gflops(dtype, size=2048, repeats=5):
    """TensorFlow's dense matmul GFLOP/s in `dtype` at one square size (2 * n^3 FLOPs a product)."""
    a = tf.random.normal([size, size], dtype=tf.float32)
    a = tf.cast(a, dtype)
    product = tf.function(lambda x: tf.reduce_sum(tf.cast(tf.matmul(x, x), tf.float32)))
    return median_rate(lambda: float(product(a)), 2 * size ** 3 / 1e9, warmup=2, repeats=repeats)


def numpy_matmul_gflops(size=2048, repeats=5):
    """numpy's (its bundled BLAS's) float32 matmul GFLOP/s at one square size."""
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    return median_rate(lambda: a @ a, 2 * size ** 3 / 1e9, warmup=2, repeats=repeats)


def best_matmul_gflops(dtype, sizes=MATMUL_SIZES, repeats=3):
    """The machine's matmul rate as the fastest library here gets it: {probe: GFLOP/s, "best": ...}.

    The FLOP-bound limit divides by the best probe, so that a fraction of the
    limit is not flattered by a slow probe: TensorFlow and (for float32) numpy,
    each at every size in `sizes`; larger sizes run closer to the peak.
    """
    probes = {f"tf_{n}": matmul_gflops(dtype, n, repeats) for n in sizes}
    if dtype == "float32":
        probes.update({f"numpy_{n}": numpy_matmul_gflops(n, repeats) for n in sizes})
    probes["best"] = max(probes.values())
    return probes


def train_step_rate(batch_size, precision="float32", jit_compile=False, steps=3, dataset=None,
                    num_classes=1000, repeats=3, image_size=paper.IMAGE_SIZE):
    """Training images/s of the real train step: synthetic input, or batches of `dataset`.

    Returns (images/s, number of traces of the step function).
    """
    if jit_compile:
        hardware.configure_xla_cpu()
    keras.mixed_precision.set_dtype_policy(hardware.KERAS_POLICIES[precision])
    try:
        strategy = tf.distribute.get_strategy()
        model = build_alexnet(num_classes, devices=None, seed=0, image_size=image_size)
        optimizer = PaperSGD(learning_rate=1e-4)
        optimizer.build(model.trainable_variables)
        step = train.make_train_step(model, optimizer, batch_size, strategy, jit_compile)
        if dataset is None:
            images = tf.random.normal([batch_size, image_size, image_size, 3])
            labels = tf.random.uniform([batch_size], 0, num_classes, tf.int64)
            batches = iter(lambda: (images, labels), None)
        else:
            batches = iter(dataset.repeat())

        def run():
            for _ in range(steps):
                [float(t) for t in step(next(batches))]
        rate = median_rate(run, steps * batch_size, repeats=repeats)
        return rate, step.experimental_get_tracing_count()
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def conv_passes(model, batch_size):
    """The model's convolutions as a train step runs them: [(layer, input shape, passes, GFLOP)].

    `passes` is 3 (forward, the kernel's gradient, the input's gradient) or 2 for
    conv1, which reads the image and so needs no input gradient; each pass is
    2 * N * OH * OW * KH * KW * Cin * Cout FLOPs.
    """
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, in_h, in_w, cin = layer.input.shape
            _, out_h, out_w, cout = layer.output.shape
            kh, kw = layer.kernel_size
            passes = 2 if base_name(layer.name) == "conv1" else 3
            gflop = 2 * batch_size * out_h * out_w * kh * kw * cin * cout * passes / 1e9
            found.append((layer, (batch_size, in_h, in_w, cin), passes, gflop))
    return found


def conv_bound_rate(batch_size, jit_compile=True, repeats=3, num_classes=10):
    """What the train step's convolutions alone allow: (images/s, their GFLOP/s).

    Times each convolution of the two-tower model by itself (its passes of
    `conv_passes`, float32, compiled like the step) on random data, and adds the
    times: the step's rate if everything else (pooling, LRN, the fully connected
    layers, the update) took no time. It tells how much of the gap to the matmul
    limit lies in the convolution kernels TensorFlow brings, not in the step.
    """
    if jit_compile:
        hardware.configure_xla_cpu()
    model = build_alexnet(num_classes, devices=None, seed=0)
    seconds, total_gflop = 0.0, 0.0
    for layer, shape, passes, gflop in conv_passes(model, batch_size):
        x = tf.random.normal(shape)
        dy = tf.random.normal((batch_size,) + tuple(layer.output.shape[1:]))

        @tf.function(jit_compile=jit_compile)
        def run(x, dy, layer=layer, wrt_input=passes == 3):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer.convolution_op(x, layer.kernel)      # the op the layer itself runs
                loss = tf.reduce_sum(y * dy)
            return [loss] + tape.gradient(loss, [layer.kernel, x] if wrt_input else [layer.kernel])

        seconds += 1 / median_rate(lambda: [t.numpy() for t in run(x, dy)], 1, repeats=repeats)
        total_gflop += gflop
    return batch_size / seconds, total_gflop / seconds


def pipeline_rate(source, normalization, batch_size, batches=20):
    """Training-pipeline images/s (decode, resize, crop, flip, PCA) with no model."""
    def run():
        data = input_pipeline.train_dataset(source, normalization, batch_size, epoch=0)
        for _, _ in zip(range(batches), data):
            pass
    return median_rate(run, batches * batch_size)


def eval_rate(source, normalization, batch_size, ten_crop, batches=3, num_classes=10,
              image_size=paper.IMAGE_SIZE):
    """Evaluation images/s (pipeline + forward pass), centre crop or 10-crop."""
    model = build_alexnet(num_classes, devices=None, seed=0, image_size=image_size)
    step = train.make_eval_step(model)
    data = input_pipeline.eval_dataset(source, normalization, batch_size, ten_crop=ten_crop,
                                       image_size=image_size)
    data = data.take(batches).cache()
    list(data)  # decode once; time the model

    def run():
        for images, _ in data:
            flat = tf.reshape(images, [-1, image_size, image_size, 3])
            step(flat).numpy()
    return median_rate(run, batches * batch_size)


def synthetic_jpeg(height=375, width=500, seed=0):
    """JPEG bytes of a smooth random picture, ImageNet's typical size (500x375)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (height // 25 + 1, width // 25 + 1, 3)).astype(np.float32)
    image = tf.image.resize(coarse[None], [height, width])[0]
    return tf.io.encode_jpeg(tf.cast(image, tf.uint8), quality=90).numpy()


def serving_latency(num_classes=1000, requests=50, batch=32, batch_repeats=3):
    """SavedModel serving from JPEG bytes: batch-1 latency p50/p99 (ms) and batch-`batch` images/s.

    The model (random weights, identity statistics) is exported with the same
    code as `alexnet-export`, loaded back with `tf.saved_model.load` and called
    through its `serving_default` signature, one request at a time.
    """
    model = build_alexnet(num_classes, devices=None, seed=0)
    size = paper.CENTRAL_CROP
    stats = dataset_stats.Stats(mean_image=np.zeros((size, size, 3), np.float32),
                                mean_channel=np.zeros(3, np.float32),
                                eigenvalues=np.ones(3, np.float32),
                                eigenvectors=np.eye(3, dtype=np.float32), num_images=0)
    module = export.ServingModule(model, [f"class_{i}" for i in range(num_classes)],
                                  dataset_stats.Normalization(stats))
    with tempfile.TemporaryDirectory() as folder:
        module.archive().write_out(folder, verbose=False)
        serve = tf.saved_model.load(folder).signatures[export.SIGNATURE_BYTES]
        one = tf.constant([synthetic_jpeg()])
        for _ in range(3):
            serve(image_bytes=one)["probabilities"].numpy()
        latencies = []
        for _ in range(requests):
            start = time.perf_counter()
            serve(image_bytes=one)["probabilities"].numpy()
            latencies.append((time.perf_counter() - start) * 1000)
        many = tf.constant([synthetic_jpeg(seed=i) for i in range(batch)])
        rate = median_rate(lambda: serve(image_bytes=many)["probabilities"].numpy(), batch,
                           repeats=batch_repeats)
    return (float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)), rate)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fraction_of_limit(images_per_second, gflop_per_image, machine_gflops):
    return images_per_second * gflop_per_image / machine_gflops


# Run in a fresh process, so its peak RSS is the load's alone.
_LOAD_SCRIPT = """
import json, resource, time
start = time.perf_counter()
import alexnet_tf
imported = time.perf_counter()
alexnet_tf.AlexNet(weights="bvlc_alexnet")
loaded = time.perf_counter()
print(json.dumps({"import_s": imported - start, "load_s": loaded - imported,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))
"""


def weights_load(repeats=3):
    """`AlexNet(weights="bvlc_alexnet")` from a warm cache, each in a fresh process.

    The cache holds a converted `.weights.h5` of the real size (random values);
    nothing is downloaded. Returns the medians: {"import_s", "load_s", "peak_rss_mb"}.
    """
    import json
    import os
    import subprocess
    import sys

    from alexnet_tf.applications import _build
    from alexnet_tf.import_caffe import imported_model
    from alexnet_tf.weights import CACHE_SUBDIR, WEIGHTS_H5
    with tempfile.TemporaryDirectory() as home:
        os.makedirs(os.path.join(home, CACHE_SUBDIR))
        _build(imported_model(), paper.NUM_CLASSES).save_weights(
            os.path.join(home, CACHE_SUBDIR, WEIGHTS_H5))
        env = dict(os.environ, KERAS_HOME=home, TF_CPP_MIN_LOG_LEVEL="3")
        runs = []
        for _ in range(repeats):
            done = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT], env=env, check=True,
                                  capture_output=True, text=True, timeout=600)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}
