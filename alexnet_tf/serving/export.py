"""SavedModel export for serving, in TF Serving's conventions.

A trained model_dir's checkpoint becomes `<export_base>/<version>/`, a
self-contained SavedModel: preprocessing (decode, shorter side to 256,
central 256x256, the training set's mean and scale, centre 224 crop or the
paper's ten crops), the network, softmax and top-k are one graph; class names
and statistics are constants inside it (class names also as a plain file,
`assets/class_names.txt`). Written through Keras's `ExportArchive`, it loads
with plain `tf.saved_model.load` without alexnet_tf, and in session-based
loaders (TF Serving, `saved_model_cli run`).

Signatures (inputs -> outputs):
  serving_default:       image_bytes  string [batch] (JPEG/PNG/GIF/BMP)
  serving_image_tensor:  image_tensor uint8 [batch, height, width, 3], any size
      -> probabilities float32 [batch, classes], top_k_ids int64 [batch, k],
         top_k_names string [batch, k], top_k_probabilities float32 [batch, k]
  features:              image_bytes string [batch] -> features float32 [batch, 4096]
      (fc7 after its ReLU, the paper's section 6.1 retrieval feature; centre crop)

Example:

    path = export(model_dir="runs/quickstart", export_base="savedmodel/alexnet")
    serve = tf.saved_model.load(path).signatures["serving_default"]
    serve(image_bytes=tf.constant([open("cat.jpg", "rb").read()]))["top_k_names"]
"""

import json
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import errors, files, hardware, metrics, paper
from alexnet_tf.config import FLOAT32, PRECISIONS
from alexnet_tf.data import preprocessing
from alexnet_tf.model.network import feature_extractor
from alexnet_tf.serving import deploy
from alexnet_tf.training import ownership
from alexnet_tf.training.restore import restore_model
from alexnet_tf.training.rundir import RunDir, variables_bytes, weights_fingerprint

DEFAULT_EXPORT_BASE = os.path.join("savedmodel", "alexnet")
TOP_K = 5                      # the paper reports top-5 (section 6)
SIGNATURE_BYTES = "serving_default"
SIGNATURE_TENSOR = "serving_image_tensor"
SIGNATURE_FEATURES = "features"
CLASS_NAMES_ASSET = "class_names.txt"
REJECTED = "rejected"
MIN_AGREEMENT = 0.98           # top-1 classes a deployment file must share with the SavedModel
MAX_FLOAT_DIFFERENCE = 1e-4    # an unquantized file's largest |probability difference|
EXPORT_INFO = os.path.join("assets.extra", "alexnet_tf_export.json")
# One decoded image after section 2's preprocessing and the mean/scale, before cropping.
NORMALISED_256 = tf.TensorSpec([paper.CENTRAL_CROP, paper.CENTRAL_CROP, 3], tf.float32)


class ExportError(errors.UserError):
    """An export that cannot be done; the message is one line."""


class ServingModule:
    """The served graph: preprocessing + network + softmax/top-k, one tf.function per signature.

    Written out through Keras's `ExportArchive` (`archive()`), whose SavedModel
    restores its variables in TF Serving's session-based loader too (a
    `tf.Module` holding the Keras model as an attribute does not: "Could not
    find variable" under `saved_model_cli run`).

    Args:
      model: A float32 AlexNet (logits out) with trained weights.
      class_names: One name per output, in output order.
      normalization: The run's `dataset_stats.Normalization` (its training set's
        statistics, mean mode and input scale).
      ten_crop: Average the softmax of the paper's ten crops (section 4.1)
        instead of one centre crop (10x the compute).
      top_k: How many classes top_k_* report (at most the number of classes).
      max_megapixels: Encoded images larger than this (by their headers) fail
        their request with an InvalidArgumentError before anything is decoded.
    """

    def __init__(self, model, class_names, normalization, *, ten_crop=False, top_k=TOP_K,
                 max_megapixels=preprocessing.MAX_MEGAPIXELS):
        if model.output.shape[-1] != len(class_names):
            raise ExportError(f"the model has {model.output.shape[-1]} outputs but there are "
                              f"{len(class_names)} class names")
        self.classifier = model
        # What the network computes in (its weighted layers' dtype policy): float32, bfloat16.
        self.precision = next(layer.compute_dtype for layer in model.layers if layer.weights)
        self.extractor = feature_extractor(model)
        self.normalization = normalization
        self.max_megapixels = float(max_megapixels)
        self.class_names = tf.constant(list(class_names))
        self.image_size = int(model.input.shape[1])
        self.ten_crop = ten_crop
        self.top_k = min(top_k, len(class_names))
        bytes_spec = tf.TensorSpec([None], tf.string, "image_bytes")
        self._endpoints = {
            SIGNATURE_BYTES: (self._classify_bytes, bytes_spec),
            SIGNATURE_TENSOR: (self._classify_tensor, tf.TensorSpec(None, tf.uint8, "image_tensor")),
            SIGNATURE_FEATURES: (self._features, bytes_spec),
        }
        self._functions = {name: tf.function(fn, input_signature=[spec])
                           for name, (fn, spec) in self._endpoints.items()}

    def signatures(self):
        """{signature name: tf.function}, called with keyword inputs like a loaded signature."""
        return dict(self._functions)

    def archive(self):
        """A `keras.export.ExportArchive` with the three signatures, ready to `write_out`."""
        archive = keras.export.ExportArchive()
        # No archive.track(model): the endpoints track the variables they use. With it, Keras
        # stores every weight twice (its wrappers and the traced tf.Variables; keras-team/keras
        # #23553), a 455 MB SavedModel instead of 228 MB, loaded twice into memory.
        for name, (fn, spec) in self._endpoints.items():
            archive.add_endpoint(name, fn, input_signature=[spec])
        return archive

    # -- preprocessing: the same ops as input_pipeline.eval_dataset ----------

    def _normalised_256(self, image):
        """One uint8 image [h, w, 3] -> float32 [256, 256, 3], mean-subtracted and scaled."""
        return self.normalization(self.normalization.image_256(image))

    def _decode_batch(self, image_bytes):
        return tf.map_fn(lambda b: self._normalised_256(
            preprocessing.decode_rgb(b, self.max_megapixels)), image_bytes,
                         fn_output_signature=NORMALISED_256)

    def _classify(self, images):
        """[B, 256, 256, 3] -> the softmax of the centre crop, or averaged over the ten crops."""
        if self.ten_crop:
            probs = metrics.crop_averaged_probabilities(
                self.classifier, preprocessing.ten_crops(images, self.image_size))
        else:
            probs = metrics.probabilities(self.classifier(
                preprocessing.centre_crop(images, self.image_size), training=False))
        top_probs, top_ids = tf.math.top_k(probs, k=self.top_k)
        return {"probabilities": probs, "top_k_ids": tf.cast(top_ids, tf.int64),
                "top_k_names": tf.gather(self.class_names, top_ids),
                "top_k_probabilities": top_probs}

    # -- the signatures -------------------------------------------------------

    def _classify_bytes(self, image_bytes):
        return self._classify(self._decode_batch(image_bytes))

    def _classify_tensor(self, image_tensor):
        shape = tf.shape(image_tensor)
        padded = tf.concat([shape, tf.zeros([4], tf.int32)], 0)   # indexable whatever the rank
        well_formed = tf.logical_and(tf.equal(tf.size(shape), 4), tf.logical_and(
            tf.equal(padded[3], 3), padded[1] * padded[2] > 0))
        check = tf.debugging.Assert(well_formed, [
            "image_tensor must be uint8 [batch, height, width, 3] with height and width >= 1; "
            "got shape", shape])
        with tf.control_dependencies([check]):
            images = tf.ensure_shape(tf.identity(image_tensor), [None, None, None, 3])
        normalised = tf.map_fn(self._normalised_256, images,
                               fn_output_signature=NORMALISED_256)
        return self._classify(normalised)

    def network_input(self, image_bytes):
        """Encoded images -> (float32 [B, S, S, 3]: the centre crops as the network takes them;
        uint8 [B, S, S, 3]: the same crops as a person sees them). Eager (Grad-CAM's input)."""
        images = tf.stack([self.normalization.image_256(
            preprocessing.decode_rgb(b, self.max_megapixels)) for b in image_bytes])
        return (preprocessing.centre_crop(self.normalization(images), self.image_size),
                preprocessing.to_uint8(preprocessing.centre_crop(images, self.image_size)).numpy())

    def _features(self, image_bytes):
        crops = preprocessing.centre_crop(self._decode_batch(image_bytes), self.image_size)
        return {"features": tf.cast(self.extractor(crops, training=False), tf.float32)}


def serving_module(model_dir, which="best", *, ten_crop=False, top_k=TOP_K,
                   max_megapixels=preprocessing.MAX_MEGAPIXELS, precision=FLOAT32):
    """(ServingModule, checkpoint path): a run's checkpoint ready to serve, computing in
    `precision` (float32 by default: it runs on any server; bfloat16 for native-bf16 ones)."""
    run_dir = RunDir(model_dir)
    model, run, path = restore_model(run_dir, which, precision=precision)
    module = ServingModule(model, run.class_names, run_dir.normalization(run),
                           ten_crop=ten_crop, top_k=top_k, max_megapixels=max_megapixels)
    return module, path


def existing_versions(export_base):
    """The integer version folders under `export_base` (TF Serving ignores everything else)."""
    if not os.path.isdir(export_base):
        return []
    return sorted(int(name) for name in os.listdir(export_base) if name.isdigit())


def export(model_dir, export_base=DEFAULT_EXPORT_BASE, *, which="best", version=None,
           ten_crop=False, top_k=TOP_K, max_megapixels=preprocessing.MAX_MEGAPIXELS,
           formats=(deploy.SAVED_MODEL,), quantize="none", calibration_images=200,
           check_images=500, precision=FLOAT32, log=print):
    """Writes `<export_base>/<version>/` atomically and returns its path.

    The next free version (1 after the highest present) unless `version` is
    given; an existing version is never overwritten. Everything is written to a
    hidden temporary folder beside it and renamed into place, so a failed
    export leaves nothing behind.

    Args:
      formats: Any of `deploy.FORMATS`: the SavedModel, and LiteRT / ONNX files
        (`deploy`), each checked against the SavedModel's graph on the run's
        validation images (`check_deployments`).
      quantize: The deployment files' quantization (`deploy.FORMAT_QUANTIZATIONS`: LiteRT
        has float16, dynamic and int8; ONNX int8).
      calibration_images: int8: training images that calibrate the activations.
      check_images: Validation images each deployment file is checked on.
      precision: What the SavedModel computes in: float32 (any server) or bfloat16 (for
        servers with native bfloat16; the weights stay float32).
    """
    # Every version of a serving base holds the SavedModel (TF Serving loads the newest
    # version); deployment files are written beside it, made from the same weights.
    formats = tuple(dict.fromkeys((deploy.SAVED_MODEL,) + tuple(formats)))
    unknown = [f for f in formats if f not in deploy.FORMATS] + (
        [] if quantize in deploy.QUANTIZATIONS else [quantize])
    if unknown:
        raise ExportError(f"unknown --format or --quantize {', '.join(unknown) or '(none)'}: "
                          f"formats {', '.join(deploy.FORMATS)}; quantizations "
                          f"{', '.join(deploy.QUANTIZATIONS)}")
    without = [f for f in formats if f != deploy.SAVED_MODEL
               and quantize not in deploy.FORMAT_QUANTIZATIONS[f]]
    if quantize != "none" and (without or formats == (deploy.SAVED_MODEL,)):
        raise ExportError(f"--quantize={quantize} is for " + " or ".join(
            f"--format={f}" for f, q in deploy.FORMAT_QUANTIZATIONS.items() if quantize in q) +
            (f" (not {', '.join(without)}: export it separately)" if without else ""))
    if precision not in PRECISIONS:
        raise ExportError(f"--precision={precision}: one of {', '.join(PRECISIONS)}")
    if precision != FLOAT32 and formats != (deploy.SAVED_MODEL,):
        raise ExportError(f"--precision={precision} is for the SavedModel alone; LiteRT and "
                          "ONNX files are converted from float32 (see --quantize): export them "
                          "in a version of their own")
    for fmt in formats:
        deploy.require(fmt)
    versions = existing_versions(export_base)
    if version is None:
        version = versions[-1] + 1 if versions else 1
    if version < 1:
        raise ExportError(f"--version must be a positive integer, got {version}")
    final = os.path.join(export_base, str(version))
    if os.path.exists(final):
        raise ExportError(f"{final} exists; exports are never overwritten (omit --version to "
                          "write the next free version)")
    module, checkpoint = serving_module(model_dir, which, ten_crop=ten_crop, top_k=top_k,
                                        max_megapixels=max_megapixels, precision=precision)
    require_memory(variables_bytes(module.classifier.variables), formats, quantize)
    deployed = [f for f in formats if f != deploy.SAVED_MODEL]
    with files.staged_directory(
            final, lambda: variables_bytes(module.classifier.variables) * (
                # each file, the converters' saved input, ONNX int8's two float32 intermediates
                1 + len(deployed) + bool(deployed) +
                (2 if quantize == "int8" and deploy.ONNX in formats else 0)),
            "free space and export again") as staging:
        _save(module, staging, checkpoint, model_dir)
        if deployed:
            check_deployments(module, RunDir(model_dir), staging, deployed, quantize,
                              calibration_images, check_images, checkpoint, log,
                              aside=os.path.join(export_base, REJECTED, str(version)))
    return final


def require_memory(weights_bytes, formats, quantize, available=None):
    """Refuses in one line, before anything is written, an export that needs more memory than
    the machine has available (`deploy.export_memory_bytes`), rather than being killed."""
    needed = deploy.export_memory_bytes(weights_bytes, formats, quantize)
    available = hardware.available_memory_bytes() if available is None else available
    if available is not None and needed > available:
        lighter = ("; the SavedModel alone needs "
                   f"{deploy.export_memory_bytes(weights_bytes, [deploy.SAVED_MODEL]) / 1e9:.1f}"
                   " GB" if len(formats) > 1 else "")
        raise ExportError(f"this export needs about {needed / 1e9:.1f} GB of memory at its peak "
                          f"({weights_bytes / 1e6:.0f} MB of weights) and {available / 1e9:.1f} GB "
                          f"is available: free memory and export again{lighter}")


def client_images(run_dir, run, split, count):
    """(uint8 [N, 256, 256, 3], labels [N]): a split's first `count` images after the run's
    resize to 256, as a deployment's client sends them (`input_pipeline.client_dataset`)."""
    from alexnet_tf.data import input_pipeline, sources
    source = sources.open_source(run.config.dataset, run.config.data_dir,
                                 run.config.max_megapixels)
    batches = list(input_pipeline.client_dataset(source, run.config.resize, 64,
                                                 split=split, max_images=count)
                   .as_numpy_iterator())
    if not batches:
        raise ExportError(f"split {split!r} of {source.name} has no images to check or "
                          "calibrate the deployment files with")
    return (np.concatenate([images for images, _ in batches]),
            np.concatenate([labels for _, labels in batches]))


def _errors(probabilities, labels):
    top5 = np.argsort(-probabilities, axis=1, kind="stable")[:, :5]
    return (float(np.mean(top5[:, 0] != labels)),
            float(np.mean([label not in row for label, row in zip(labels, top5)])))


def check_deployments(module, run_dir, folder, formats, quantize, calibration_images,
                      check_images, checkpoint, log, aside):
    """Converts the model to each format in `folder`, checks each against the SavedModel's graph
    on the validation images, and writes labels.txt and export_report.json beside them.

    A file that agrees with the SavedModel on fewer than MIN_AGREEMENT of the top-1 classes (or,
    unquantized, differs by more than MAX_FLOAT_DIFFERENCE) is moved to `aside`
    (<export_base>/rejected/<version>/) for inspection and the export stops with one line.
    """
    run = run_dir.read()
    # The converters' input, on disk: they run in processes of their own (deploy.convert_apart).
    converting = os.path.join(folder, ".converting")
    os.makedirs(converting)
    saved = deploy.save_for_conversion(module.classifier, module.normalization, converting)
    images, labels = client_images(run_dir, run, run.config.eval_split, check_images)
    classify = module.signatures()[SIGNATURE_TENSOR]
    reference = np.concatenate([classify(image_tensor=tf.constant(images[i:i + 32]))[
        "probabilities"].numpy() for i in range(0, len(images), 32)])
    calibration = None
    if quantize == "int8":
        calibration, _ = client_images(run_dir, run, run.config.train_split, calibration_images)
    report = {"checkpoint": os.path.abspath(checkpoint), "weights_sha1":
              weights_fingerprint(checkpoint),
              "input": {"name": "images", "dtype": "uint8",
                        "shape": [None, deploy.INPUT_SIDE, deploy.INPUT_SIDE, 3],
                        "resize": run.config.resize, "crop": module.image_size},
              "output": {"name": "probabilities", "dtype": "float32",
                         "shape": [None, len(run.class_names)]},
              "labels": deploy.LABELS, "check_images": len(images),
              "run": {"model_dir": os.path.abspath(run_dir.path), "dataset": run.config.dataset,
                      "data_dir": run.config.data_dir, "eval_split": run.config.eval_split},
              "savedmodel": dict(zip(("top1_error", "top5_error"), _errors(reference, labels))),
              "artifacts": []}
    failed = []
    for fmt in formats:
        name = deploy.file_name(fmt, quantize)
        path = os.path.join(folder, name)
        log(f"converting to {fmt} ({'float32' if quantize == 'none' else quantize}): {name}")
        deploy.convert_apart(saved, fmt, path, quantize, calibration)
        runner = deploy.Runner(path)
        found = np.concatenate([runner(images[i:i + 1]) for i in range(len(images))])
        quantized = quantize != "none"
        entry = {"format": fmt, "quantize": quantize,
                 "file": name, "bytes": os.path.getsize(path),
                 "top1_agreement": float(np.mean(found.argmax(1) == reference.argmax(1))),
                 "max_abs_probability_difference": float(np.abs(found - reference).max()),
                 **dict(zip(("top1_error", "top5_error"), _errors(found, labels))),
                 # int8: the ops left in float32 (LiteRT's; ONNX Runtime's QDQ graph lists none)
                 "float32_ops": runner.float_ops() if quantize == "int8" else {}}
        entry["passed"] = (entry["top1_agreement"] >= MIN_AGREEMENT and
                           (quantized or entry["max_abs_probability_difference"]
                            <= MAX_FLOAT_DIFFERENCE))
        report["artifacts"].append(entry)
        if not entry["passed"]:
            failed.append(entry)
    shutil.rmtree(converting)
    with open(os.path.join(folder, deploy.LABELS), "w") as f:
        f.write("\n".join(run.class_names) + "\n")
    files.atomic_write_json(os.path.join(folder, deploy.REPORT), report)
    for line in report_lines(report):
        log(line)
    if failed:
        os.makedirs(aside, exist_ok=True)
        for entry in failed:
            os.replace(os.path.join(folder, entry["file"]), os.path.join(aside, entry["file"]))
        os.replace(os.path.join(folder, deploy.REPORT), os.path.join(aside, deploy.REPORT))
        worst = failed[0]
        raise ExportError(f"{worst['file']} agrees with the SavedModel on "
                          f"{worst['top1_agreement']:.1%} of top-1 classes (max |dp| "
                          f"{worst['max_abs_probability_difference']:.2g}); set aside in {aside} "
                          "with export_report.json, nothing exported")


def report_lines(report):
    """export_report.json as a table: each file against the SavedModel."""
    saved = report["savedmodel"]
    lines = [f"checked on {report['check_images']} validation images against the SavedModel "
             f"(top-1 error {saved['top1_error']:.1%}, top-5 {saved['top5_error']:.1%}):",
             f"  {'file':<26} {'MB':>7} {'top-1 agree':>11} {'max |dp|':>9} {'top-1 err':>9} "
             f"{'top-5 err':>9}  ok"]
    for a in report["artifacts"]:
        lines.append(f"  {a['file']:<26} {a['bytes'] / 1e6:7.1f} {a['top1_agreement']:11.1%} "
                     f"{a['max_abs_probability_difference']:9.2g} {a['top1_error']:9.1%} "
                     f"{a['top5_error']:9.1%}  {'yes' if a['passed'] else 'NO'}")
        if a["quantize"] == "int8":
            ops = ", ".join(f"{name} x{count}" for name, count in sorted(a["float32_ops"].items()))
            lines.append(f"    in float32: {deploy.KEEP_FLOAT}" + (
                f"; LiteRT's float32 ops: {ops}" if ops else ""))
    return lines


def _save(module, folder, checkpoint, model_dir):
    module.archive().write_out(folder, verbose=False)
    names = "\n".join(n.decode() for n in module.class_names.numpy()) + "\n"
    os.makedirs(os.path.join(folder, "assets"), exist_ok=True)
    with open(os.path.join(folder, "assets", CLASS_NAMES_ASSET), "w") as f:
        f.write(names)   # for people and tools; the graph uses its own constant
    info = {"checkpoint": os.path.abspath(checkpoint), "model_dir": os.path.abspath(model_dir),
            "weights_sha1": weights_fingerprint(checkpoint),
            "ten_crop": module.ten_crop, "top_k": module.top_k, "precision": module.precision,
            "max_megapixels": module.max_megapixels,
            "signatures": [SIGNATURE_BYTES, SIGNATURE_TENSOR, SIGNATURE_FEATURES],
            "history": ownership.summary(model_dir)}
    os.makedirs(os.path.join(folder, os.path.dirname(EXPORT_INFO)))
    with open(os.path.join(folder, EXPORT_INFO), "w") as f:
        json.dump(info, f, indent=2)


def resolve_saved_model(path, notice=None):
    """An export folder, or an export base's newest version holding a SavedModel.

    Bases written before every version held one (a `--format=litert` or `onnx` export made a
    version of deployment files alone) may have newer versions without it; TF Serving would
    load those and fail. They are skipped, and `notice` (if given) gets one line naming them.
    """
    if tf.saved_model.contains_saved_model(path):
        return path
    versions = existing_versions(path)
    servable = [v for v in versions
                if tf.saved_model.contains_saved_model(os.path.join(path, str(v)))]
    if not servable:
        raise ExportError(
            f"{path} holds no SavedModel; pass an export folder (<export_base>/<version>), an "
            "export base with versions, or a .tflite/.onnx file's path" if not versions else
            f"no version in {path} holds a SavedModel (deployment files alone, an earlier "
            "layout): pass one .tflite/.onnx file's path, or export again")
    skipped = [v for v in versions if v > servable[-1]]
    if skipped and notice is not None:
        notice(f"{path}: version {', '.join(map(str, skipped))} holds no SavedModel (deployment "
               f"files alone, an earlier layout; TF Serving would fail to load it): using "
               f"version {servable[-1]}. Move it out of the base: {move_hint(path, skipped)}")
    return os.path.join(path, str(servable[-1]))


def move_hint(base, versions):
    """The command that moves deployment-only versions out of a serving base."""
    aside = base.rstrip(os.sep) + "-deploy"
    return f"mkdir -p {aside} && " + " && ".join(
        f"mv {os.path.join(base, str(v))} {os.path.join(aside, str(v))}" for v in versions)


def checkpoint_module(model_dir, which="best", precision=FLOAT32):
    """(ServingModule, info) of a run's checkpoint, `info` as `load_signatures` gives it."""
    module, checkpoint = serving_module(model_dir, which, precision=precision)
    return module, {"source": os.path.abspath(checkpoint),
                    "weights_sha1": weights_fingerprint(checkpoint), "precision": module.precision}


def load_signatures(saved_model=None, model_dir=None, which="best", precision=FLOAT32,
                    notice=None):
    """({signature name: callable}, {"source": path, "weights_sha1": ..., "precision": ...}).

    Each callable takes keyword inputs and returns a dict of tensors. From an
    exported SavedModel, or straight from a model_dir's checkpoint (the same
    graph, built in memory). The weights' fingerprint (`rundir.weights_fingerprint`)
    is the same for a checkpoint and its export (None for an export that does
    not record it). `precision`: what a checkpoint's graph computes in (an export
    computes as it was exported).
    """
    if (saved_model is None) == (model_dir is None):
        raise ExportError("give exactly one of --saved_model and --model_dir")
    if model_dir is not None:
        module, info = checkpoint_module(model_dir, which, precision)
        return module.signatures(), info
    folder = resolve_saved_model(saved_model, notice)
    info = files.read_json(os.path.join(folder, EXPORT_INFO)) or {}
    return dict(tf.saved_model.load(folder).signatures), {
        "source": os.path.abspath(folder), "weights_sha1": info.get("weights_sha1"),
        "precision": info.get("precision", FLOAT32)}
