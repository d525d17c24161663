"""alexnet-figures: the paper's figure 3 (conv1 kernels) and figure 4 left (top-5 panels) as PNGs,
and with --gradcam where the network looked (Grad-CAM)."""

import os
import sys

import tensorflow as tf
from absl import app, flags

from alexnet_tf import errors, figures, files
from alexnet_tf.analysis import grad_cam
from alexnet_tf.cli import common
from alexnet_tf.data import imagenet, preprocessing, sources
from alexnet_tf.serving import export
from alexnet_tf.training.rundir import RunDir

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "The training run.", required=True)
flags.DEFINE_string("checkpoint", "best", "best, latest, or a checkpoint path (DIR/ckpt-N).")
flags.DEFINE_string("out_dir", "figures", "Where conv1_kernels.png and predictions.png go.")
flags.DEFINE_string("split", None, "Images for the prediction panels; default: the run's "
                    "evaluation split.")
flags.DEFINE_integer("num_images", 8, "How many prediction panels.", lower_bound=1)
flags.DEFINE_string("dataset", None, "Images for the prediction panels from this dataset "
                    "(a TFDS name or image_folder:ROOT); default: the run's.")
flags.DEFINE_string("data_dir", None, "Default: the data_dir the model was trained with.")
flags.DEFINE_boolean("gradcam", False, "Also write gradcam.png: for each of the --num_images "
                     "images, the image, its Grad-CAM map from conv5 (both towers) over it, the "
                     "predicted and the true class.")
common.define_inference_flags(jit=False)

KERNELS_PNG, PREDICTIONS_PNG, GRADCAM_PNG = "conv1_kernels.png", "predictions.png", "gradcam.png"
common.path_flags(model_dir=common.IN_DIR, out_dir=common.OUT_DIR, data_dir=common.OUT_DIR)


def shown_name(name):
    """A class's name as the panels show it (an ILSVRC-2012 synset by its first WordNet name)."""
    return imagenet.describe(name).split(",")[0]


def prediction_panels(module, source, examples):
    """Figure 4 (left): per (encoded image, label) of `examples`, its top-5 as bars."""
    serve = module.signatures()[export.SIGNATURE_BYTES]
    panels = []
    for encoded, label in examples:
        out = serve(image_bytes=tf.constant([encoded]))
        names = [shown_name(n.decode()) for n in out["top_k_names"][0].numpy()]
        panels.append(figures.prediction_panel(
            preprocessing.thumbnail(encoded, figures.PANEL_IMAGE), names,
            out["top_k_probabilities"][0].numpy(), source.class_names[int(label)]))
    return panels


def grad_cam_panels(module, source, examples):
    """Per (encoded image, label): the crop the network saw, its Grad-CAM map of the top class,
    and the classes."""
    panels = []
    for encoded, label in examples:
        x, shown = module.network_input([encoded])
        maps, classes, probabilities = grad_cam.maps_and_classes(module.classifier, x)
        panels.append(figures.grad_cam_panel(shown[0], maps[0], [
            f"predicted: {shown_name(module.class_names[classes[0]].numpy().decode())} "
            f"{probabilities[0] * 100:.0f}%",
            f"true: {source.class_names[int(label)]}"]))
    return panels


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    common.quiet_libraries()
    try:
        config = RunDir(FLAGS.model_dir).read().config
        settings, line = common.inference_settings("figures")
        print(line, flush=True)
        module, checkpoint = export.serving_module(FLAGS.model_dir, FLAGS.checkpoint,
                                                   precision=settings["mixed_precision"])
        source = sources.open_source(
            FLAGS.dataset or config.dataset,
            FLAGS.data_dir if FLAGS.data_dir is not None else config.data_dir)
        examples = list(source.encoded(FLAGS.split or config.eval_split)
                        .take(FLAGS.num_images).as_numpy_iterator())     # read once, used twice
        panels = prediction_panels(module, source, examples)
        cams = FLAGS.gradcam and grad_cam_panels(module, source, examples)
    except errors.UserError as error:
        print(f"alexnet-figures: error: {error}", file=sys.stderr)
        sys.exit(1)
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    # Default names never overwrite earlier figures; an --out_dir given explicitly is rewritten.
    name = (lambda n: os.path.join(FLAGS.out_dir, n)) if FLAGS["out_dir"].present else \
        (lambda n: files.unused_path(os.path.join(FLAGS.out_dir, n)))
    kernels = name(KERNELS_PNG)
    towers = figures.conv1_kernels(module.classifier)
    figures.write_png(kernels, figures.kernel_figure(towers))
    predictions = name(PREDICTIONS_PNG)
    figures.write_png(predictions, figures.panel_grid(panels))
    print(f"from {checkpoint}: wrote {kernels} (figure 3) and {predictions} (figure 4, left)")
    if cams:
        path = name(GRADCAM_PNG)
        figures.write_png(path, figures.panel_grid(cams, columns=2))
        print(f"wrote {path} (Grad-CAM of the top class from conv5, both towers)")
    shares = ", ".join(f"tower {'ab'[i]} {figures.chromatic_fraction(k):.3f}"
                       for i, k in enumerate(towers)) if len(towers) > 1 else \
        f"{figures.chromatic_fraction(towers[0]):.3f}"
    print(f"conv1 chromatic energy / total (0 = grey kernels; the paper's figure 3 has tower a "
          f"colour-agnostic, tower b colour-specific): {shares}")


def run():
    common.run_tool("figures", main)


if __name__ == "__main__":
    run()
