"""alexnet-eval: top-1 / top-5 error of trained model_dirs, one or an ensemble."""

import sys

from absl import app, flags

from alexnet_tf import errors, files
from alexnet_tf.analysis import evaluate
from alexnet_tf.cli import common

FLAGS = flags.FLAGS
flags.DEFINE_list("model_dir", None, "One model_dir, or several for an ensemble (mean softmax).")
flags.DEFINE_string("saved_model", None, "Instead of --model_dir: a LiteRT/ONNX file (.tflite, "
                    ".onnx) or the version folder holding one, run by its own runtime on the "
                    "images its export checked (centre crop).")
flags.DEFINE_string("checkpoint", "best", "best, latest, or a checkpoint path (one model_dir).")
flags.DEFINE_string("dataset", None, "Default: the dataset the model was trained on.")
flags.DEFINE_string("data_dir", None, "Default: the data_dir the model was trained with.")
flags.DEFINE_string("split", None, "Default: the run's evaluation split.")
flags.DEFINE_boolean("ten_crop", False, "Average the softmax of the paper's ten crops.")
flags.DEFINE_integer("batch_size", 64, "Images per evaluation batch.")
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
common.define_inference_flags()
flags.DEFINE_string("report", None, "Also write a per-class report into this folder: "
                    "per_class.csv/.json (top-1 error, precision, recall), confusion.png, "
                    "most_confused.csv (of the ensemble, with several model_dirs).")
common.path_flags(model_dir=common.IN_DIR, saved_model=common.IN_PATH, data_dir=common.OUT_DIR,
                  json=common.OUT_FILE)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if bool(FLAGS.model_dir) == bool(FLAGS.saved_model):
        raise app.UsageError("give one of --model_dir (runs) and --saved_model (a .tflite/.onnx "
                             "file)")
    if FLAGS.saved_model and FLAGS.ten_crop:
        raise app.UsageError("--ten_crop needs --model_dir: a deployment file computes the "
                             "centre crop only")
    common.quiet_libraries()
    try:
        if FLAGS.saved_model:
            split, rows = evaluate.evaluate_deployed(
                FLAGS.saved_model, split=FLAGS.split, dataset=FLAGS.dataset,
                data_dir=FLAGS.data_dir, batch_size=FLAGS.batch_size, report_dir=FLAGS.report)
        else:
            settings, line = common.inference_settings("eval")
            print(line, flush=True)
            split, rows = evaluate.evaluate_runs(
                FLAGS.model_dir, split=FLAGS.split, dataset=FLAGS.dataset,
                data_dir=FLAGS.data_dir, which=FLAGS.checkpoint, ten_crop=FLAGS.ten_crop,
                batch_size=FLAGS.batch_size, report_dir=FLAGS.report,
                precision=settings["mixed_precision"], jit_compile=settings["jit_compile"])
    except errors.UserError as error:
        print(f"alexnet-eval: error: {error}", file=sys.stderr)
        sys.exit(1)
    print(evaluate.format_table(rows, split, FLAGS.ten_crop))
    if FLAGS.report:
        pairs = rows[-1]["most_confused"]
        print(f"report: {FLAGS.report} (per_class.csv, per_class.json, confusion.png, "
              "most_confused.csv); most confused (true -> predicted: images):")
        for true, predicted, count in pairs or [("none", "none", 0)]:
            print(f"  {true} -> {predicted}: {count}")
    if FLAGS.json:
        files.atomic_write_json(FLAGS.json, {"split": split, "ten_crop": FLAGS.ten_crop,
                                             "results": rows})


def run():
    common.run_tool("eval", main)


if __name__ == "__main__":
    run()
