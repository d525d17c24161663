"""Deployment formats beside the SavedModel: LiteRT (TFLite) and ONNX, each run by its own runtime.

A deployed AlexNet takes what a client can make without TensorFlow: uint8
`[batch, 256, 256, 3]` RGB, the image after the run's resize to 256
(`preprocessing.image_256`), and does the rest inside (the mean, the centre
crop at the run's size, the scale), returning `probabilities [batch, classes]`.
The conversion is Keras' own (`model.export(format="litert" | "onnx")`, which
drive `tf.lite.TFLiteConverter` and tf2onnx); post-training quantization is the
converters' (LiteRT: float16, dynamic range, or full integer calibrated on the
run's training images; ONNX Runtime: static int8). int8 leaves the preprocessing,
LRN, the logits and the softmax in float32 (`KEEP_FLOAT`).

The runtimes and converters are the optional `deploy` extra
(`pip install -e '.[deploy]'`): `ai-edge-litert`, `onnxruntime`, `tf2onnx`.
"""

import importlib
import os
import re
import warnings

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import errors, files, hardware, paper
from alexnet_tf.data import preprocessing
from alexnet_tf.model.layers import LocalResponseNormalization

LITERT, ONNX, SAVED_MODEL = "litert", "onnx", "saved_model"
FORMATS = (SAVED_MODEL, LITERT, ONNX)
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
INPUT_SIDE = paper.RESIZE_SHORTER_SIDE            # the client sends the image resized to 256
EXTRA = "pip install -e '.[deploy]'"
# Beside the files in a version folder: the class names, one a line, and the export's check.
LABELS, REPORT = "labels.txt", "export_report.json"
# What each format needs, by module: (pip package, import name).
NEEDS = {LITERT: (("ai-edge-litert", "ai_edge_litert"),),
         ONNX: (("tf2onnx", "tf2onnx"), ("onnxruntime", "onnxruntime"))}


class DeployError(errors.UserError):
    """A deployment export or artifact that cannot be used; the message is one line."""


def require(fmt):
    """Raises one line naming the missing packages of the `deploy` extra for `fmt`."""
    missing = [package for package, module in NEEDS.get(fmt, ())
               if importlib.util.find_spec(module) is None]
    if missing:
        raise DeployError(f"--format={fmt} needs {', '.join(missing)} (the deploy extra: "
                          f"{EXTRA})")


# The quantizations each deployment format has (LiteRT's converter; ONNX Runtime's quantizer).
FORMAT_QUANTIZATIONS = {LITERT: QUANTIZATIONS, ONNX: ("none", "int8")}


# An export's peak memory with its children: TensorFlow itself plus a multiple of the network's
# weights, from the peaks measured for the 1000-class network (244 MB of weights; SERVING.md):
# 1.10 GB for the SavedModel alone, 3.23 GB with float32 files, 3.73 GB with int8 ones.
EXPORT_MEMORY_BASE = 0.5e9
EXPORT_MEMORY_PER_WEIGHT = {SAVED_MODEL: 2.5, "none": 11.5, "float16": 11.5, "dynamic": 11.5,
                            "int8": 13.5}


def export_memory_bytes(weights_bytes, formats, quantize="none"):
    """The memory an export of these formats needs at its peak, with its converter children."""
    deployed = any(f != SAVED_MODEL for f in formats)
    return EXPORT_MEMORY_BASE + weights_bytes * EXPORT_MEMORY_PER_WEIGHT[
        quantize if deployed else SAVED_MODEL]


def file_name(fmt, quantize="none"):
    """The artifact's name inside a version folder."""
    if fmt == LITERT:
        return f"alexnet_{'float32' if quantize == 'none' else quantize}.tflite"
    return "alexnet.onnx" if quantize == "none" else f"alexnet_{quantize}.onnx"


def runtime_name(path):
    """The runtime that runs a deployment file, by its name."""
    return "LiteRT" if path.endswith(".tflite") else "ONNX Runtime"


@keras.saving.register_keras_serializable(package="alexnet_tf")
class DeployPreprocessing(keras.layers.Layer):
    """uint8 `[B, 256, 256, 3]` -> the network's input: minus the mean, the centre crop, / scale.

    Args:
      mean: float32 `[256, 256, 3]` (a mean image) or `[3]` (channel means).
      scale: float32 `[3]` (1 for the paper's raw pixels).
      crop: The network's input side (224, or 227 for Caffe's weights).
    """

    def __init__(self, mean, scale, crop, **kwargs):
        super().__init__(**kwargs)
        self.mean = np.asarray(mean, np.float32)
        self.scale = np.asarray(scale, np.float32)
        self.crop = int(crop)

    def call(self, images):
        x = tf.cast(images, tf.float32) - self.mean
        top = (INPUT_SIDE - self.crop) // 2
        x = x[:, top:top + self.crop, top:top + self.crop, :]
        return x / self.scale

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.crop, self.crop, 3)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "crop": self.crop}


def _with_matmul_lrn(classifier):
    """A copy of `classifier` (its weights) whose LRN layers take the band-matrix form
    (`tf_paths.lrn_matmul`: a square, a small matmul over the channels, roots), which every
    runtime computes fast, and the same file wherever it is exported. LiteRT's and ONNX
    Runtime's own LRN kernels are slow: with them the float32 files took 38.8 and 29.7 ms at
    batch 1, with the band matrix 20.7 and 22.0 (AVX2, 2026-11-26). The caller's model is
    unchanged."""
    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, LocalResponseNormalization):
            config["implementation"] = "matmul"
        for key in ("kernel_initializer", "bias_initializer"):
            if key in config:       # every weight is copied below: no random draws (0.5 s)
                config[key] = "zeros"
        return layer.__class__.from_config(config)
    copy = keras.models.clone_model(classifier, clone_function=clone)
    copy.set_weights(classifier.get_weights())
    return copy


def deploy_model(classifier, normalization):
    """The model a deployment format holds: uint8 images in, float32 probabilities out.

    Args:
      classifier: A float32 AlexNet (logits out) with trained weights.
      normalization: The run's `dataset_stats.Normalization`.
    """
    classifier = _with_matmul_lrn(classifier)
    crop = int(classifier.input.shape[1])
    images = keras.Input((INPUT_SIDE, INPUT_SIDE, 3), dtype="uint8", name="images")
    x = DeployPreprocessing(normalization.mean.numpy(), normalization.scale.numpy(), crop,
                            name="preprocessing")(images)
    logits = classifier(x, training=False)
    probabilities = keras.layers.Activation("softmax", dtype="float32",
                                            name="probabilities")(logits)
    model = keras.Model(images, probabilities, name="alexnet_deployed")
    # Called once: Keras' ONNX export refuses a model that never was ("The model provided has
    # never called"), which `--format=onnx` alone met.
    model(np.zeros((1, INPUT_SIDE, INPUT_SIDE, 3), np.uint8), training=False)
    return model


def convert(model, fmt, path, quantize="none", calibration=None):
    """Writes `model` as a LiteRT or ONNX file at `path` (the converters' own files).

    Args:
      quantize: "none" (float32); LiteRT: "float16" (weights), "dynamic" (int8 weights,
        float activations) or "int8" (full integer where LiteRT has int8 kernels,
        calibrated on `calibration`); ONNX: "int8" (`_onnx_int8`).
      calibration: uint8 `[N, 256, 256, 3]` images (int8 only).
    """
    require(fmt)
    if fmt == ONNX:
        if quantize == "none":
            _onnx_float32(model, path)
        else:
            _onnx_int8(model, path, calibration)
        return
    options = {}
    if quantize != "none":
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        options["target_spec"] = {"supported_types": [tf.float16]}
    if quantize == "int8":
        _litert_int8(model, path, calibration)
        return
    # LiteRT's builtin ops only: no TF (Flex) ops.
    options.setdefault("target_spec", {})["supported_ops"] = [tf.lite.OpsSet.TFLITE_BUILTINS]
    model.export(path, format="litert", verbose=False, **options)


# The converters in a process of their own: protobuf's pure-Python form there, in which tf2onnx's
# copies of the graph share the weights' bytes (its C form copied them at every optimizer pass:
# 14 GB resident for the 1000-class network's ONNX file, 2.3 GB this way, docs/SERVING.md).
CHILD_ENV = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python", "TF_CPP_MIN_LOG_LEVEL": "2"}
_CHILD_ERROR = "alexnet_tf.serving.deploy: error: "


def save_for_conversion(classifier, normalization, folder):
    """`deploy_model(classifier, normalization)` saved as `folder`/deploy.keras for
    `convert_apart`; the caller keeps no copy of it in memory while the converters run."""
    path = os.path.join(folder, "deploy.keras")
    deploy_model(classifier, normalization).save(path)
    return path


def convert_apart(saved, fmt, path, quantize="none", calibration=None):
    """`convert` of the model saved at `saved` (`save_for_conversion`) in a child process, which
    gives all its memory back when it ends; the calibration images reach it as a file in a
    temporary folder beside `path`. A conversion that fails or is killed (out of memory) raises
    one line."""
    import gc
    import shutil
    import subprocess
    import sys
    import tempfile

    folder = tempfile.mkdtemp(prefix=".convert-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        images = os.path.join(folder, "calibration.npy")
        if calibration is not None:
            np.save(images, calibration)
        gc.collect()
        hardware.give_back_freed_memory()       # what this process freed, before the child's peak
        code = ("import sys; from alexnet_tf.serving import deploy; "
                "deploy._convert_main(sys.argv[1:])")
        done = subprocess.run([sys.executable, "-c", code, saved, fmt, path, quantize, images],
                              env={**os.environ, **CHILD_ENV}, capture_output=True, text=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if done.returncode < 0:
        raise DeployError(f"converting to {fmt} ({quantize}) was ended by signal "
                          f"{-done.returncode}: with SIGKILL, most likely the system ran out of "
                          "memory; free memory, or export one --format at a time")
    if done.returncode:
        said = [line for line in done.stderr.splitlines() if line.startswith(_CHILD_ERROR)]
        raise DeployError(f"converting to {fmt} ({quantize}) failed: " + (
            said[-1][len(_CHILD_ERROR):] if said else
            (done.stderr.strip().splitlines() or ["no message"])[-1]))


def _convert_main(argv):
    """The child of `convert_apart`: argv = model.keras, format, path, quantize, images.npy."""
    import sys
    saved, fmt, path, quantize, images = argv
    try:
        model = keras.models.load_model(saved, compile=False)
        calibration = np.load(images) if os.path.exists(images) else None
        if fmt == LITERT and quantize == "int8":
            # The Keras model leaves memory before the quantizer's peak (AlexNet: 244 MB).
            import gc
            import tempfile
            with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as folder:
                _write_archive(model, folder)
                layers = _float32_layers(model)
                del model
                keras.backend.clear_session()
                gc.collect()
                hardware.give_back_freed_memory()
                _litert_int8_from(folder, layers, path, calibration)
        else:
            convert(model, fmt, path, quantize, calibration)
    except Exception as error:            # one line for the parent, which raises it
        print(f"{_CHILD_ERROR}{errors.first_line(error)}", file=sys.stderr)
        sys.exit(1)


def _onnx_float32(model, path):
    """The float32 ONNX file, by tf2onnx as Keras' `model.export(format="onnx")` calls it, but
    in its large-model form: the weights stay in one table beside the graph instead of inside
    each node's proto, and are put back into the one file at the end (with `CHILD_ENV`, 2.3 GB
    resident for the 1000-class network instead of 14 GB, docs/SERVING.md)."""
    import tf2onnx
    from keras.src.export.tf2onnx_lib import patch_tf2onnx
    from onnx import TensorProto

    signature = [tf.TensorSpec(model.input.shape, tf.uint8, name=model.input.name)]
    function = tf.function(lambda images: model(images, training=False))
    patch_tf2onnx()                         # as Keras does: tf2onnx 1.17 with numpy 2
    proto, storage = tf2onnx.convert.from_function(function, signature, large_model=True)
    for tensor in proto.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            location = next(e.value for e in tensor.external_data if e.key == "location")
            tensor.raw_data = storage.name_to_tensor_data.pop(location)
            del tensor.external_data[:]
            tensor.data_location = TensorProto.DEFAULT
    files.atomic_write(path, proto.SerializeToString())


# int8 keeps these in float32, where the quantizers would lose what matters or gain nothing:
# - the logits and the softmax: quantized to int8, the logits carry an error of about 0.1 (a
#   step of 0.38 on the quick start's run), which swaps near-tied classes (top-1 agreement with
#   float32: 96.7% in LiteRT, 97.2% in ONNX, against 99.2-99.7% kept float);
# - LRN and the preprocessing: elementwise work on the largest tensors, which the runtimes do
#   faster in float32 than between quantize and dequantize ops (ONNX: 14.7 ms at batch 1 with
#   them quantized, 11.4 ms kept float; AVX2, 2026-11-26, docs/BENCHMARKS.md).
KEEP_FLOAT = "the preprocessing, LRN, the logits and the softmax"


def _float32_layers(model):
    """The names of the layers int8 leaves in float32 (`KEEP_FLOAT`): the deployment's
    preprocessing and the LRN layers, also inside a nested classifier."""
    names = []
    for layer in model.layers:
        if isinstance(layer, (DeployPreprocessing, LocalResponseNormalization)):
            names.append(layer.name)
        elif isinstance(layer, keras.Model):
            names += _float32_layers(layer)
    return names


def _in_layers(node_name, layers):
    """Whether a converted graph's node (or LiteRT tensor) name belongs to one of `layers`: its
    name scopes are the Keras layers' names, uniquified with a suffix ("lrn1_a_1")."""
    parts = {part for name in node_name.split(";") for part in name.split("/")}
    return any(re.fullmatch(rf"{re.escape(layer)}(_\d+)?", part)
               for layer in layers for part in parts)


def _litert_int8(model, path, calibration):
    """LiteRT's full-integer quantization, calibrated on `calibration`: int8 kernels where LiteRT
    has them, and `KEEP_FLOAT` left in float32 by the converter's own selective quantization
    (`tf.lite.experimental.QuantizationDebugger`'s deny-lists)."""
    import tempfile
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as folder:
        _write_archive(model, folder)
        _litert_int8_from(folder, _float32_layers(model), path, calibration)


def _write_archive(model, folder):
    """`model` as a SavedModel for the converter, by Keras' own route (ExportArchive), without
    track(): the endpoint tracks its variables (keras-team/keras #23553: track stores them
    twice)."""
    import functools
    archive = keras.export.ExportArchive()
    archive.add_endpoint("serve", functools.partial(model.__call__, training=False),
                         input_signature=[tf.TensorSpec(model.input.shape, tf.uint8)])
    archive.write_out(folder, verbose=False)


def _litert_int8_from(saved_model, float32_layers, path, calibration):
    """`_litert_int8` of the SavedModel at `saved_model`; `float32_layers`: `_float32_layers`."""
    def representative():
        for image in calibration:
            yield [image[None]]

    debugging = tf.lite.experimental
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    with warnings.catch_warnings():      # the debugger's own tf.lite.Interpreter is deprecated
        warnings.simplefilter("ignore", UserWarning)
        debugger = debugging.QuantizationDebugger(
            converter=converter, debug_dataset=representative,
            debug_options=debugging.QuantizationDebugOptions(denylisted_ops=["SOFTMAX"]))
        debugger.options = debugging.QuantizationDebugOptions(
            denylisted_ops=["SOFTMAX"], denylisted_nodes=_litert_float32_nodes(
                debugger.calibrated_model, float32_layers))
    files.atomic_write(path, debugger.get_nondebug_quantized_model())


def _litert_float32_nodes(model_content, layers):
    """The LiteRT nodes (named by their output tensors) to leave in float32: the one that makes
    the logits (the softmax's input), and every node of `layers`."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_content=model_content)
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    softmax = next(op for op in ops if op["op_name"] == "SOFTMAX")
    return [names[softmax["inputs"][0]]] + [
        names[i] for op in ops for i in op["outputs"] if _in_layers(names[i], layers)]


def _onnx_int8(model, path, calibration):
    """ONNX Runtime's static int8 quantization of the float32 ONNX file (QDQ, per-channel int8
    weights, uint8 activations calibrated on `calibration` by min/max; `KEEP_FLOAT` left in
    float32). The weights keep 7 bits (`reduce_range`): on CPUs without VNNI (AVX2, AVX-512
    before Cascade Lake) the u8 x s8 products of 8-bit weights saturate; the file is the same
    wherever it is exported."""
    import tempfile

    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Images(CalibrationDataReader):
        def __init__(self, name):
            self._feeds = iter([{name: image[None]} for image in calibration])

        def get_next(self):
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as folder:
        float32 = os.path.join(folder, "float32.onnx")
        _onnx_float32(model, float32)
        prepared = os.path.join(folder, "prepared.onnx")
        quant_pre_process(float32, prepared, skip_symbolic_shape=True)
        graph = onnx.load(prepared, load_external_data=False).graph
        softmax = next(node for node in graph.node if node.op_type == "Softmax")
        logits = next(node for node in graph.node if softmax.input[0] in node.output)
        layers = _float32_layers(model)
        keep = [logits.name, softmax.name] + [node.name for node in graph.node
                                              if _in_layers(node.name, layers)]
        quantize_static(prepared, path, Images(graph.input[0].name), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=keep)


# --- The runtimes (no TensorFlow needed in a client; here they run beside it) -----------------


class Runner:
    """Runs a .tflite or .onnx file with its own runtime: `runner(images) -> probabilities`.

    Args:
      path: The artifact.
      threads: Intra-op threads (default: the CPU count).
    """

    def __init__(self, path, threads=None):
        self.path = path
        threads = threads or os.cpu_count()
        if not os.path.isfile(path):
            raise DeployError(f"{path} does not exist (a .tflite or .onnx file)")
        if path.endswith(".tflite"):
            require(LITERT)
            from ai_edge_litert.interpreter import Interpreter
            try:
                self._interpreter = Interpreter(model_path=path, num_threads=threads)
                self._input = self._interpreter.get_input_details()[0]
                self._output = self._interpreter.get_output_details()[0]
            except (ValueError, RuntimeError) as error:
                raise DeployError(f"{path} is not a LiteRT model this runtime reads "
                                  f"({errors.first_line(error, 120)})") from None
            self._batch = None
            self.kind = LITERT
        elif path.endswith(".onnx"):
            require(ONNX)
            import onnxruntime
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.log_severity_level = 3
            try:
                self._session = onnxruntime.InferenceSession(
                    path, options, providers=["CPUExecutionProvider"])
            except Exception as error:         # noqa: BLE001 (onnxruntime's own exception types)
                raise DeployError(f"{path} is not an ONNX model this runtime reads "
                                  f"({errors.first_line(error, 120)})") from None
            self._name = self._session.get_inputs()[0].name
            self.kind = ONNX
        else:
            raise DeployError(f"{path} is neither a .tflite nor an .onnx file")

    def float_ops(self):
        """{op name: count} of the ops that compute in float32 (LiteRT only; {} for ONNX)."""
        if self.kind != LITERT:
            return {}
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
        plain = Interpreter(model_path=self.path, experimental_op_resolver_type=(
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))       # the ops, not XNNPACK's node
        counts = {}
        dtype = {t["index"]: t["dtype"] for t in plain.get_tensor_details()}
        for op in plain._get_ops_details():
            if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
                continue
            if any(dtype.get(i) == np.float32 for i in op["inputs"] if i >= 0):
                counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
        return counts

    def __call__(self, images):
        images = np.ascontiguousarray(images, np.uint8)
        if self.kind == ONNX:
            return self._session.run(None, {self._name: images})[0]
        if self._batch != len(images):
            self._interpreter.resize_tensor_input(self._input["index"], images.shape)
            self._interpreter.allocate_tensors()
            self._batch = len(images)
        self._interpreter.set_tensor(self._input["index"], images)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output["index"]).copy()


def find_artifact(path):
    """The .tflite/.onnx file `path` names, or the only one a folder without a SavedModel
    holds (an earlier layout's deployment version); None otherwise. A folder of several
    such files is refused in one line that names them."""
    if path.endswith((".tflite", ".onnx")):
        return path
    if os.path.isdir(path) and not tf.saved_model.contains_saved_model(path):
        found = sorted(n for n in os.listdir(path) if n.endswith((".tflite", ".onnx")))
        if len(found) > 1:
            raise DeployError(f"{path} holds {', '.join(found)}: give one file's path")
        if found:
            return os.path.join(path, found[0])
    return None


def read_labels(folder):
    """The class names of LABELS in `folder`, or None if it has none."""
    try:
        with open(os.path.join(folder, LABELS)) as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    except OSError:
        return None


def read_report(folder):
    """REPORT in `folder` as a dict ({} if it has none or it does not read)."""
    return files.read_json(os.path.join(folder, REPORT)) or {}


def classify_bytes(path, top_k=5, max_megapixels=preprocessing.MAX_MEGAPIXELS):
    """A callable like the SavedModel's serving_default, computed by a deployment file.

    `serve(image_bytes=[B] strings)` -> {"probabilities", "top_k_ids", "top_k_names",
    "top_k_probabilities"}; the images are decoded and resized the run's way (its
    export_report.json beside the file), then run by the file's own runtime. An image
    that does not decode raises `tf.errors.InvalidArgumentError`, as the SavedModel does.
    """
    runner = Runner(path)
    folder = os.path.dirname(path)
    resize = read_report(folder).get("input", {}).get("resize", preprocessing.SHORTER_SIDE)
    names = read_labels(folder)

    def serve(image_bytes):
        images = np.stack([preprocessing.to_uint8(preprocessing.image_256(
            preprocessing.decode_rgb(b, max_megapixels), resize)).numpy()
            for b in tf.unstack(image_bytes)])
        probabilities = runner(images)
        k = min(top_k, probabilities.shape[1])
        ids = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        labels = names if names and len(names) == probabilities.shape[1] else [
            str(i) for i in range(probabilities.shape[1])]
        return {"probabilities": tf.constant(probabilities), "top_k_ids": tf.constant(ids),
                "top_k_names": tf.constant([[labels[i].encode() for i in row] for row in ids]),
                "top_k_probabilities": tf.constant(np.take_along_axis(probabilities, ids, 1))}
    return serve
