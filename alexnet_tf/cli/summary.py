"""alexnet-summary: print the model the flags describe, with its parameter count."""

from absl import app, flags

from alexnet_tf.cli import model_flags
from alexnet_tf.models import build_alexnet

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_classes", 1000, "Classes of the output layer.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    model = build_alexnet(FLAGS.num_classes, model_flags.model_config())
    model.summary(line_length=100)
    print(f"trainable parameters: {model.count_params():,}")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
