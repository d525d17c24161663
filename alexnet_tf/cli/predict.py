"""alexnet-predict: the top-k classes of image files, from an export or a model_dir's checkpoint;
with --gradcam, where the network looked for each (Grad-CAM)."""

import json
import os
import sys

import tensorflow as tf
from absl import app, flags

from alexnet_tf import errors, figures, files
from alexnet_tf.analysis import grad_cam
from alexnet_tf.cli import common
from alexnet_tf.data import imagenet, preprocessing, sources
from alexnet_tf.serving import deploy, export

FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model", None, "An export (<export_base>/<version>), an export base "
                    "(its newest version holding a SavedModel), or a LiteRT/ONNX file (.tflite, "
                    ".onnx), run by its own runtime.")
flags.DEFINE_string("model_dir", None, "Instead of --saved_model: a training run's checkpoint.")
flags.DEFINE_string("checkpoint", "best", "With --model_dir: best, latest, or DIR/ckpt-N.")
common.define_max_megapixels()
common.define_inference_flags(jit=False)      # with --model_dir: what its graph computes in
flags.DEFINE_string("json", None, "Also write the results as one JSON document to this file; "
                    "--json=- prints it instead of the table.")
flags.DEFINE_string("gradcam", None, "With --model_dir: also write, for each image, its Grad-CAM "
                    "overlay (the top class's map from conv5, both towers) to "
                    "DIR/<image name>.gradcam.png.")
common.path_flags(saved_model=common.IN_PATH, model_dir=common.IN_DIR, json=common.OUT_FILE,
                  gradcam=common.OUT_DIR)


def write_grad_cam(module, path, data, result, folder):
    """DIR/<image name>.gradcam.png: the crop the network saw and its top class's map over it
    (`data`: the file's bytes, as `predict_file` read them)."""
    x, shown = module.network_input([data])
    maps, classes, probabilities = grad_cam.maps_and_classes(module.classifier, x)
    top = result["top_k"][0]
    name = top["name"] + (f" ({top['description'].split(',')[0]})" if "description" in top else "")
    out = os.path.join(folder, os.path.basename(path) + ".gradcam.png")
    figures.write_png(out, figures.grad_cam_panel(shown[0], maps[0], [
        f"{name} {probabilities[0] * 100:.1f}%", f"Grad-CAM of conv5 ({os.path.basename(path)})"]))
    return out


def predict_file(serve, path):
    """({"image", "top_k": [{"id", "name", "probability"}]} or {"image", "error"}, the file's
    bytes) for one file."""
    data, problem = common.read_file(path)
    problem = problem or preprocessing.image_problem(data, FLAGS.max_megapixels)
    if problem:
        return {"image": path, "error": problem}, data
    try:
        out = serve(image_bytes=tf.constant([data]))
    except tf.errors.InvalidArgumentError as error:
        return {"image": path, "error": common.serving_error(error)}, data
    top = zip(out["top_k_ids"][0].numpy(), out["top_k_names"][0].numpy(),
              out["top_k_probabilities"][0].numpy())
    return ({"image": path, "top_k": [_entry(int(i), n.decode(), float(p)) for i, n, p in top]},
            data)


def _entry(class_id, name, probability):
    """One class of a result; ILSVRC-2012 synset ids get their WordNet names beside them."""
    entry = {"id": class_id, "name": name, "probability": probability}
    description = imagenet.describe(name)
    if description != name:
        entry["description"] = description
    return entry


def format_result(result):
    if "error" in result:
        return f"{result['image']}: error: {result['error']}"
    lines = [result["image"]]
    for rank, entry in enumerate(result["top_k"], 1):
        name = entry["name"] + (f" ({entry['description']})" if "description" in entry else "")
        lines.append(f"  {rank}. {name:<40} {entry['probability'] * 100:6.2f}%")
    return "\n".join(lines)


def main(argv):
    images = argv[1:]
    if not images:
        raise app.UsageError("give one or more image files: alexnet-predict --saved_model=DIR a.jpg")
    if FLAGS.gradcam and not FLAGS.model_dir:
        raise app.UsageError("--gradcam needs --model_dir (a run's checkpoint): an export has no "
                             "gradients to read")
    common.quiet_libraries()
    try:
        artifact = FLAGS.saved_model and deploy.find_artifact(FLAGS.saved_model)
        if artifact:                       # a LiteRT / ONNX file, run by its own runtime
            signatures = {export.SIGNATURE_BYTES: deploy.classify_bytes(
                artifact, max_megapixels=FLAGS.max_megapixels)}
            source = f"{artifact} ({deploy.runtime_name(artifact)})"
        else:
            precision = common.checkpoint_precision("predict", show=FLAGS.json != "-")
            if FLAGS.gradcam:          # the network itself, for its gradients (--model_dir)
                module, info = export.checkpoint_module(FLAGS.model_dir, FLAGS.checkpoint,
                                                        precision)
                signatures = module.signatures()
            else:
                signatures, info = export.load_signatures(FLAGS.saved_model, FLAGS.model_dir,
                                                          FLAGS.checkpoint, precision,
                                                          sources.notice)
            source = (f"{files.shown_path(info['source'])} "
                      f"({'SavedModel' if FLAGS.saved_model else 'checkpoint'}, "
                      f"{info['precision']})")
    except errors.UserError as error:
        print(f"alexnet-predict: error: {error}", file=sys.stderr)
        sys.exit(1)
    if FLAGS.json != "-":
        print(f"Predicting with {source}")
    results = []
    for path in images:
        result, data = predict_file(signatures[export.SIGNATURE_BYTES], path)
        results.append(result)
        if "error" in result:
            print(f"alexnet-predict: error: {path}: {result['error']}", file=sys.stderr)
        else:
            if FLAGS.json != "-":
                print(format_result(result))
            if FLAGS.gradcam:
                os.makedirs(FLAGS.gradcam, exist_ok=True)
                written = write_grad_cam(module, path, data, result, FLAGS.gradcam)
                if FLAGS.json != "-":
                    print(f"  Grad-CAM: {written}")
    if FLAGS.json == "-":
        print(json.dumps(results, indent=2))
    elif FLAGS.json:
        files.atomic_write_json(FLAGS.json, results)
    failed = sum("error" in r for r in results)
    return 1 if failed else 0


def run():
    common.run_tool("predict", main)


if __name__ == "__main__":
    run()
