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

from alexnet_tf import hardware, paper
from alexnet_tf.data import dataset_stats, input_pipeline
from alexnet_tf.model.network import base_name, build_alexnet
from alexnet_tf.serving import export
from alexnet_tf.training import runtime, train
from alexnet_tf.training.optimizer import PaperSGD

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


def train_step_rate(batch_size, precision="float32", jit_compile=False, steps=3,
                    num_classes=1000, repeats=3, image_size=paper.IMAGE_SIZE, pipeline=None):
    """Training images/s of the real train step on synthetic input.

    Returns (images/s, number of traces of the step function); with `pipeline`
    (a dataset of batches), (images/s, traces, images/s of the same traced step
    fed by `pipeline`), which spares a second model and compilation.
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
        images = tf.random.normal([batch_size, image_size, image_size, 3])
        labels = tf.random.uniform([batch_size], 0, num_classes, tf.int64)

        def rate_of(batches):
            def run():
                for _ in range(steps):
                    [float(t) for t in step(next(batches))]
            return median_rate(run, steps * batch_size, repeats=repeats)
        rate = rate_of(iter(lambda: (images, labels), None))
        if pipeline is None:
            return rate, step.experimental_get_tracing_count()
        fed = rate_of(iter(pipeline.repeat()))
        return rate, step.experimental_get_tracing_count(), fed
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


def conv_bound_rate(batch_size, jit_compile=True, repeats=3, num_classes=10,
                    precision="float32"):
    """What the train step's convolutions alone allow: (images/s, their GFLOP/s).

    Times each convolution of the two-tower model by itself (its passes of
    `conv_passes`, in `precision`, compiled like the step) on random data, and adds
    the times: the step's rate if everything else (pooling, LRN, the fully connected
    layers, the update) took no time. It tells how much of the gap to the matmul
    limit lies in the convolution kernels TensorFlow brings, not in the step.
    """
    if jit_compile:
        hardware.configure_xla_cpu()
    model = build_alexnet(num_classes, devices=None, seed=0)
    dtype = tf.as_dtype(precision)
    seconds, total_gflop = 0.0, 0.0
    for layer, shape, passes, gflop in conv_passes(model, batch_size):
        x = tf.cast(tf.random.normal(shape), dtype)
        dy = tf.cast(tf.random.normal((batch_size,) + tuple(layer.output.shape[1:])), dtype)
        kernel = tf.Variable(tf.cast(layer.kernel.value, dtype))

        @tf.function(jit_compile=jit_compile)
        def run(x, dy, layer=layer, kernel=kernel, wrt_input=passes == 3):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer.convolution_op(x, kernel)      # the op the layer itself runs
                loss = tf.reduce_sum(tf.cast(y * dy, tf.float32))
            return [loss] + tape.gradient(loss, [kernel, x] if wrt_input else [kernel])

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
              image_size=paper.IMAGE_SIZE, precision="float32", jit_compile=False, repeats=3):
    """Evaluation images/s (the forward pass on decoded batches), centre crop or 10-crop,
    computing in `precision`, compiled by XLA with `jit_compile`; the median of `repeats`."""
    if jit_compile:
        hardware.configure_xla_cpu()
    with runtime.dtype_policy(precision):
        model = build_alexnet(num_classes, devices=None, seed=0, image_size=image_size)
    step = tf.function(lambda images: model(images, training=False), jit_compile=jit_compile,
                       reduce_retracing=True)
    data = input_pipeline.eval_dataset(source, normalization, batch_size, ten_crop=ten_crop,
                                       image_size=image_size)
    data = data.take(batches).cache()
    list(data)  # decode once; time the model

    def run():
        for images, _ in data:
            flat = tf.reshape(images, [-1, image_size, image_size, 3])
            step(flat).numpy()
    return median_rate(run, batches * batch_size, repeats=repeats)


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

    from alexnet_tf.model.network import build_alexnet
    from alexnet_tf.model.weights import CACHE_SUBDIR, WEIGHTS_H5
    from alexnet_tf.model import caffe
    with tempfile.TemporaryDirectory() as home:
        os.makedirs(os.path.join(home, CACHE_SUBDIR))
        build_alexnet(paper.NUM_CLASSES, caffe.network_config(), devices=None).save_weights(
            os.path.join(home, CACHE_SUBDIR, WEIGHTS_H5))
        env = dict(os.environ, KERAS_HOME=home, TF_CPP_MIN_LOG_LEVEL="3")
        runs = []
        for _ in range(repeats):
            done = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT], env=env, check=True,
                                  capture_output=True, text=True, timeout=600)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


# --- Serving per format and precision -------------------------------------------------------

# Run in a fresh process per file, importing only its runtime (TensorFlow for the SavedModel),
# so that its peak RSS is what a server of that file needs.
_SERVE_SCRIPT = r"""
import json, resource, sys, time
import numpy as np
path, images_path, requests, batch, out = sys.argv[1:]
requests, batch = int(requests), int(batch)
images = np.load(images_path)
if path.endswith(".onnx"):
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    run = lambda x: session.run(None, {name: x})[0]
elif path.endswith(".tflite"):
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=path, num_threads=%(threads)d)
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    shape = [None]
    def run(x):
        if shape[0] != x.shape:
            interpreter.resize_tensor_input(inp["index"], x.shape)
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(outp["index"]).copy()
else:
    import tensorflow as tf
    serve = tf.saved_model.load(path).signatures["serving_image_tensor"]
    run = lambda x: serve(image_tensor=tf.constant(x))["probabilities"].numpy()
probabilities = np.concatenate([run(images[i:i + batch]) for i in range(0, len(images), batch)])
one = images[:1]
for _ in range(3):
    run(one)
latencies = []
for i in range(requests):
    start = time.perf_counter()
    run(images[i %% len(images)][None])
    latencies.append((time.perf_counter() - start) * 1000)
many = np.resize(images, (batch,) + images.shape[1:])
run(many)
rates = []
for _ in range(3):
    start = time.perf_counter()
    run(many)
    rates.append(batch / (time.perf_counter() - start))
np.save(out, probabilities)
try:       # this process's own peak (ru_maxrss would include the parent's, kept across exec)
    with open("/proc/self/status") as f:
        peak = next(int(l.split()[1]) / 1024.0 for l in f if l.startswith("VmHWM:"))
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps({"p50_ms": float(np.percentile(latencies, 50)),
                  "p99_ms": float(np.percentile(latencies, 99)),
                  "batch_img_s": float(np.median(rates)), "peak_rss_mb": peak}))
"""


def serve_file(path, images, requests=100, batch=32, threads=None):
    """Serves `path` (a SavedModel folder, .tflite or .onnx) in a fresh process on uint8
    [N, 256, 256, 3] `images`: ({"p50_ms", "p99_ms", "batch_img_s", "peak_rss_mb"},
    probabilities [N, C])."""
    import json
    import os
    import subprocess
    import sys
    with tempfile.TemporaryDirectory() as folder:
        np.save(os.path.join(folder, "images.npy"), images)
        out = os.path.join(folder, "probabilities.npy")
        script = _SERVE_SCRIPT % {"threads": threads or os.cpu_count()}
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        done = subprocess.run([sys.executable, "-c", script, path,
                               os.path.join(folder, "images.npy"), str(requests), str(batch),
                               out], env=env, capture_output=True, text=True, timeout=3600)
        if done.returncode:
            raise RuntimeError(f"serving {path} failed: {done.stderr.strip()[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1]), np.load(out)


def serving_files(model_dir, folder, precisions, quantizations, calibration_images=200,
                  log=print):
    """Writes a run's checkpoint in each form a server runs into `folder`.

    Returns [(form, precision, path)]: the SavedModel in each of `precisions`
    ("float32", "bfloat16"), LiteRT with each of `quantizations`, and ONNX in
    float32 and int8. The int8 files are calibrated as `alexnet-export` does.
    """
    import os
    from alexnet_tf.serving import deploy
    from alexnet_tf.training.rundir import RunDir
    forms, modules = [], {}
    for precision in precisions:
        modules[precision], _ = export.serving_module(model_dir, precision=precision)
        path = os.path.join(folder, f"saved_model_{precision}")
        modules[precision].archive().write_out(path, verbose=False)
        forms.append(("SavedModel", precision, path))
    # The deployment files are converted from the float32 network (restored once).
    float32 = modules.get("float32") or export.serving_module(model_dir)[0]
    saved = deploy.save_for_conversion(float32.classifier, float32.normalization, folder)
    run_dir = RunDir(model_dir)
    run = run_dir.read()
    calibration = None
    if "int8" in quantizations:
        calibration, _ = export.client_images(run_dir, run, run.config.train_split,
                                              calibration_images)
    for quantize in quantizations:
        path = os.path.join(folder, deploy.file_name(deploy.LITERT, quantize))
        log(f"converting to LiteRT ({quantize})")
        deploy.convert_apart(saved, deploy.LITERT, path, quantize, calibration)
        forms.append(("LiteRT", "float32" if quantize == "none" else quantize, path))
    for quantize in deploy.FORMAT_QUANTIZATIONS[deploy.ONNX]:
        path = os.path.join(folder, deploy.file_name(deploy.ONNX, quantize))
        log(f"converting to ONNX ({quantize})")
        deploy.convert_apart(saved, deploy.ONNX, path, quantize, calibration)
        forms.append(("ONNX", "float32" if quantize == "none" else quantize, path))
    return forms


def file_bytes(path):
    """A file's size, or a SavedModel's: its graph and variables (not other files beside)."""
    import os
    if os.path.isfile(path):
        return os.path.getsize(path)
    variables = os.path.join(path, "variables")
    return os.path.getsize(os.path.join(path, "saved_model.pb")) + sum(
        os.path.getsize(os.path.join(variables, n)) for n in os.listdir(variables))


def serving_table(forms, images, requests=100, batch=32):
    """One row per form: its measurements in a fresh process, its size and its top-1
    agreement with the first form (the float32 SavedModel) on `images`."""
    rows, reference = [], None
    for form, precision, path in forms:
        measured, probabilities = serve_file(path, images, requests, batch)
        if reference is None:
            reference = probabilities
        rows.append({"form": form, "precision": precision, "bytes": file_bytes(path),
                     **measured, "top1_agreement": float(np.mean(
                         probabilities.argmax(1) == reference.argmax(1))),
                     "max_abs_probability_difference": float(np.abs(
                         probabilities - reference).max())})
    base = rows[0]["p50_ms"]
    for row in rows:
        row["p50_over_savedmodel"] = row["p50_ms"] / base
    return rows


def serving_table_lines(rows, batch=32):
    lines = [f"{'form':<11} {'precision':<9} {'MB':>7} {'b1 p50 ms':>9} {'b1 p99 ms':>9} "
             f"{'x SavedModel':>12} {f'b{batch} img/s':>9} {'peak RSS MB':>11} {'top-1 agree':>11}"]
    for r in rows:
        lines.append(f"{r['form']:<11} {r['precision']:<9} {r['bytes'] / 1e6:7.1f} "
                     f"{r['p50_ms']:9.1f} {r['p99_ms']:9.1f} {r['p50_over_savedmodel']:12.2f} "
                     f"{r['batch_img_s']:9.1f} {r['peak_rss_mb']:11.0f} "
                     f"{r['top1_agreement']:11.1%}")
    return lines
