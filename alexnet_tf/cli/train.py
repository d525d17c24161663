"""alexnet-train: train AlexNet with the paper's recipe (or a flagfile's)."""

import json
import os
import sys

import tensorflow as tf
from absl import app, flags

from alexnet_tf import config, errors, hardware
from alexnet_tf.cli import common, model_flags  # noqa: F401  (defines the model's flags)
from alexnet_tf.training.train import NonFiniteLoss, Stopped, WorkerLost, train

FLAGS = flags.FLAGS
config.define_flags(config.TrainConfig)      # one flag per TrainConfig setting (config.py)
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "default: one replica, towers placed by --towers_on; mirrored: data parallel "
                  "over --devices (default: all local GPUs); multi_worker: data parallel over the "
                  "workers that the TF_CONFIG environment variable describes.")
flags.DEFINE_list("devices", [], "mirrored: the replicas' devices, e.g. /GPU:0,/GPU:1.")
flags.DEFINE_integer("worker_timeout", 600, "multi_worker: seconds a collective waits for the "
                     "other workers before this worker stops with an error.")
flags.register_validator("worker_timeout", lambda v: v >= 1, "--worker_timeout must be >= 1.")
common.path_flags(model_dir=common.OUT_DIR, data_dir=common.OUT_DIR)


def make_strategy():
    """The tf.distribute strategy --strategy names (None for the default strategy)."""
    if FLAGS.devices and FLAGS.strategy != "mirrored":
        raise errors.ConfigError("--devices is for --strategy=mirrored")
    if FLAGS.strategy == "mirrored":
        return tf.distribute.MirroredStrategy(FLAGS.devices or None)
    if FLAGS.strategy == "multi_worker":
        try:
            cluster = json.loads(os.environ["TF_CONFIG"])["cluster"]
        except (KeyError, ValueError, TypeError):
            raise errors.ConfigError(
                "--strategy=multi_worker needs the TF_CONFIG environment variable (JSON: "
                '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
                '"index": N}}), see docs/SCALING.md') from None
        if not cluster:
            raise errors.ConfigError("TF_CONFIG names no cluster")
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=FLAGS.worker_timeout)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    common.quiet_libraries()
    hardware.keep_freed_memory()   # this process trains: reuse the step's buffers
    try:
        train_config = config.from_flags(config.TrainConfig)
        train(train_config, make_strategy(), log=lambda line: print(line, flush=True))
    except (errors.UserError, NonFiniteLoss, WorkerLost) as error:
        print(f"alexnet-train: error: {error}", file=sys.stderr)
        sys.exit(1)
    except Stopped as stopped:           # the checkpoint is saved and the line printed
        sys.exit(stopped.exit_status)


def run():
    common.run_tool("train", main)


if __name__ == "__main__":
    run()
