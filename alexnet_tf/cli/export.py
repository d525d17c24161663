"""alexnet-export: a model_dir's checkpoint -> <export_base>/<version>/: a SavedModel for serving,
and LiteRT / ONNX files for deployment, each checked against the SavedModel."""

import sys

from absl import app, flags

from alexnet_tf import errors
from alexnet_tf.cli import common
from alexnet_tf.serving import deploy, export

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "The training run to export.", required=True)
flags.DEFINE_string("checkpoint", "best", "best, latest, or a checkpoint path (DIR/ckpt-N).")
flags.DEFINE_string("export_base", export.DEFAULT_EXPORT_BASE,
                    "TF Serving's model base path; the export goes to <export_base>/<version>/.")
flags.DEFINE_integer("version", None, "Version folder; default: the next free one. An existing "
                     "version is never overwritten.", lower_bound=1)
flags.DEFINE_boolean("ten_crop", False, "serving_default and serving_image_tensor average the "
                     "softmax of the paper's ten crops (10x the compute) instead of one centre crop.")
flags.DEFINE_integer("top_k", export.TOP_K, "How many classes top_k_* outputs report.",
                     lower_bound=1)
common.define_max_megapixels("A request's image larger than this (read from its header) fails "
                             "that request alone, before decoding.")
flags.DEFINE_list("format", [deploy.SAVED_MODEL], "What to write into the version folder: "
                  "saved_model (TF Serving; every version holds it, so a serving base stays "
                  "servable), and beside it litert (alexnet_<quantize>.tflite) and onnx "
                  "(alexnet.onnx, alexnet_int8.onnx); several at once, e.g. litert,onnx. litert "
                  f"and onnx need the deploy extra ({deploy.EXTRA}).")
flags.DEFINE_enum("quantize", "none", list(deploy.QUANTIZATIONS), "none (float32); LiteRT: "
                  "float16 weights, dynamic (int8 weights), or int8 (full integer, calibrated on "
                  "--calibration_images training images; LRN stays float32); ONNX: int8 (ONNX "
                  "Runtime's static quantization of convolutions and matrix products, "
                  "calibrated the same way).")
flags.DEFINE_integer("calibration_images", 200, "int8: training images that calibrate the "
                     "activations.", lower_bound=1)
flags.DEFINE_integer("check_images", 500, "Validation images each LiteRT/ONNX file is checked "
                     "on against the SavedModel.", lower_bound=1)
flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16"], "What the SavedModel "
                  "computes in: float32 runs on any server; bfloat16 is for servers that compute "
                  "it natively (avx512_bf16/amx_bf16 CPUs, recent GPUs, TPUs); weights stay "
                  "float32.")
common.path_flags(model_dir=common.IN_DIR, export_base=common.OUT_DIR)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    common.quiet_libraries()
    try:
        path = export.export(FLAGS.model_dir, FLAGS.export_base, which=FLAGS.checkpoint,
                             version=FLAGS.version, ten_crop=FLAGS.ten_crop, top_k=FLAGS.top_k,
                             max_megapixels=FLAGS.max_megapixels, formats=FLAGS.format,
                             quantize=FLAGS.quantize,
                             calibration_images=FLAGS.calibration_images,
                             check_images=FLAGS.check_images, precision=FLAGS.precision,
                             log=lambda line: print(line, flush=True))
    except errors.UserError as error:
        print(f"alexnet-export: error: {error}", file=sys.stderr)
        sys.exit(1)
    print(f"exported {path}: the SavedModel ({FLAGS.precision}; signatures: "
          f"{export.SIGNATURE_BYTES}, {export.SIGNATURE_TENSOR}, {export.SIGNATURE_FEATURES})" +
          "".join(f", {deploy.file_name(f, FLAGS.quantize)}"
                  for f in dict.fromkeys(FLAGS.format) if f != deploy.SAVED_MODEL))


def run():
    common.run_tool("export", main)


if __name__ == "__main__":
    run()
