"""alexnet-import: Caffe's bvlc_alexnet.caffemodel -> a run directory (the paper's network, trained).

    alexnet-import [--caffemodel=bvlc_alexnet.caffemodel] \
        [--mean=imagenet_mean.binaryproto] --model_dir=runs/bvlc_alexnet

Without --caffemodel the published file is downloaded into the Keras cache
(once; its sha1 checked), as `alexnet_tf.AlexNet(weights="bvlc_alexnet")` does.

The run directory works with every other tool: alexnet-eval, -export,
-predict, -retrieve, -figures, and alexnet-train --init_from to fine-tune.
"""

import sys

from absl import app, flags

from alexnet_tf import errors, files
from alexnet_tf.cli import common
from alexnet_tf.model import caffe, weights

FLAGS = flags.FLAGS
flags.DEFINE_string("caffemodel", None, "The caffemodel: bvlc_alexnet.caffemodel (published at "
                    f"{caffe.PUBLISHED_URL}, sha1 {caffe.PUBLISHED_SHA1}), V1 or V2 layout. "
                    "Default: the published file, downloaded once into the Keras cache "
                    f"($KERAS_HOME/models; a mirror with ${weights.URL_VARIABLE}).")
flags.DEFINE_string("mean", None, "Caffe's mean image (imagenet_mean.binaryproto, 3x256x256); "
                    "default: Caffe's per-channel BGR mean "
                    f"{', '.join(map(str, caffe.CAFFE_BGR_MEAN))}.")
flags.DEFINE_string("model_dir", None, "The run directory to write (new, or an empty folder).",
                    required=True)
common.path_flags(caffemodel=common.IN_FILE, model_dir=common.OUT_DIR)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        # Read and check everything first (no TensorFlow needed), then build and write.
        files.require_new_directory(FLAGS.model_dir)
        caffemodel = FLAGS.caffemodel or weights.fetch_caffemodel()
        loaded = caffe.load(caffemodel, FLAGS.mean)
        from alexnet_tf.training.import_caffe import write_run
        common.quiet_libraries()
        run = write_run(loaded, FLAGS.model_dir)
    except errors.UserError as error:
        print(f"alexnet-import: error: {error}".replace("\n", "\n  "), file=sys.stderr)
        sys.exit(1)
    model = run.config.model
    print(f"wrote {FLAGS.model_dir}: {run.num_classes} ILSVRC-2012 classes, input "
          f"{model.image_size}x{model.image_size}, LRN k={model.lrn_k:g} alpha={model.lrn_alpha:g} "
          f"across towers, {model.pool_rounding} pooling, mean "
          f"{'image' if FLAGS.mean else 'per channel'}, images squashed to 256x256")


def run():
    common.run_tool("import", main)


if __name__ == "__main__":
    run()
