"""alexnet-train: train AlexNet with the paper's recipe (or a flagfile's)."""

import json
import os
import sys

import tensorflow as tf
from absl import app, flags

from alexnet_tf import input_pipeline, paper, schedule
from alexnet_tf.cli import common, data_flags, model_flags  # noqa: F401  (shared flags)
from alexnet_tf.train import NonFiniteLoss, parse_epochs, TrainConfig, WorkerLost, train

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Where checkpoints, TensorBoard logs and run files go; "
                    "running again on the same dir resumes.", required=True)
flags.DEFINE_string("epochs", str(paper.EPOCHS),
                    "Epochs (section 5: about 90). PRECISION:N entries set the length of a run "
                    "computing in that precision, e.g. 14,float32:4: 14 epochs, but 4 where "
                    "--mixed_precision=auto chose float32 (hardware without fast bfloat16).")
flags.DEFINE_integer("max_steps", None, "Stop after this many steps in all (cuts a run short).")
flags.DEFINE_float("learning_rate", paper.LEARNING_RATE, "Initial learning rate (0.01).")
flags.DEFINE_float("momentum", paper.MOMENTUM, "Momentum (0.9).")
flags.DEFINE_float("weight_decay", paper.WEIGHT_DECAY,
                   "Weight decay inside the momentum, kernels only (0.0005).")
flags.DEFINE_enum("lr_schedule", "plateau", schedule.SCHEDULES,
                  "plateau: /10 when validation error stops improving (the paper); step: /10 at "
                  "--lr_boundaries epochs; cosine: --lr_warmup_epochs of linear warm-up, then a "
                  "half cosine to 0 at the last step (not the paper; for short runs).")
flags.DEFINE_integer("lr_patience", 1, "plateau: epochs without improvement before dividing.")
flags.DEFINE_integer("lr_max_decays", paper.LR_MAX_DECAYS, "plateau: divide at most this often.")
flags.DEFINE_list("lr_boundaries", [], "step: epochs after which the rate is divided by 10.")
flags.DEFINE_float("lr_warmup_epochs", 0.0, "cosine: epochs of linear warm-up (may be a fraction).")
flags.DEFINE_enum("mean", "image", input_pipeline.MEAN_MODES,
                  "Subtract the training set's mean image (the paper) or per-channel mean.")
flags.DEFINE_enum("input_scale", "none", input_pipeline.INPUT_SCALES,
                  "none: raw mean-subtracted pixels (the paper); std: also divide by the "
                  "per-channel std (for --kernel_init=he/glorot).")
flags.DEFINE_boolean("pca", True, "PCA colour augmentation (section 4.1).")
flags.DEFINE_integer("seed", 0, "Seed of the initialisation, data order and augmentation.")
flags.DEFINE_boolean("deterministic", False, "Deterministic ops (slower; same seed, same run).")
flags.DEFINE_integer("checkpoint_steps", 1000, "Also checkpoint every this many steps.")
flags.DEFINE_integer("keep_checkpoints", 3, "Keep the last this many checkpoints (+ the best).")
flags.DEFINE_integer("log_steps", 20, "Progress line and train scalars every this many steps.")
flags.DEFINE_enum("mixed_precision", "auto", ["auto", "float32", "bfloat16", "float16", "none"],
                  "Compute precision; variables stay float32. auto: bfloat16 where the hardware "
                  "computes it natively (CPUs with avx512_bf16/amx_bf16, GPUs of compute "
                  "capability 8.0+, TPUs), float16 with loss scaling on GPUs of compute "
                  "capability 7.x, float32 otherwise. none = float32.")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                  "XLA-compile the train step. auto: on where it measured faster (float32 on "
                  "AVX2 CPUs without AVX-512), off elsewhere (docs/BENCHMARKS.md).")
flags.DEFINE_list("profile_steps", [], "START,STOP: a TensorBoard profiler trace of these steps.")
flags.DEFINE_boolean("histograms", False, "Weight histograms in TensorBoard every epoch.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "default: one replica, towers placed by --towers_on; mirrored: data parallel "
                  "over --devices (default: all local GPUs); multi_worker: data parallel over the "
                  "workers that the TF_CONFIG environment variable describes.")
flags.DEFINE_list("devices", [], "mirrored: the replicas' devices, e.g. /GPU:0,/GPU:1.")
flags.DEFINE_integer("worker_timeout", 600, "multi_worker: seconds a collective waits for the "
                     "other workers before this worker stops with an error.")

flags.register_validator("learning_rate", lambda v: v > 0, "--learning_rate must be > 0.")
flags.register_validator("momentum", lambda v: 0 <= v < 1, "--momentum must be in [0, 1).")
flags.register_validator("weight_decay", lambda v: v >= 0, "--weight_decay must be >= 0.")
flags.register_validator("epochs", lambda v: _parses(parse_epochs, v),
                         "--epochs must be a number of epochs, e.g. 90, or 14,float32:4.")
flags.register_validator("max_steps", lambda v: v is None or v >= 1, "--max_steps must be >= 1.")
flags.register_validator("checkpoint_steps", lambda v: v >= 1, "--checkpoint_steps must be >= 1.")
flags.register_validator("log_steps", lambda v: v >= 1, "--log_steps must be >= 1.")
flags.register_validator("lr_boundaries", lambda v: all(s.isdigit() for s in v),
                         "--lr_boundaries must be epochs, e.g. 30,60,80.")
flags.register_validator("lr_warmup_epochs", lambda v: v >= 0, "--lr_warmup_epochs must be >= 0.")
flags.register_validator("worker_timeout", lambda v: v >= 1, "--worker_timeout must be >= 1.")
flags.register_validator("profile_steps", lambda v: not v or (
    len(v) == 2 and all(s.isdigit() for s in v) and int(v[0]) < int(v[1])),
    "--profile_steps must be START,STOP with START < STOP.")


def _parses(parse, value):
    try:
        parse(value)
    except ValueError:
        return False
    return True


def config_from_flags():
    epochs, epochs_by_precision = parse_epochs(FLAGS.epochs)
    return TrainConfig(
        model_dir=FLAGS.model_dir, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
        train_split=FLAGS.train_split, eval_split=FLAGS.eval_split, batch_size=FLAGS.batch_size,
        epochs=epochs, epochs_by_precision=epochs_by_precision, max_steps=FLAGS.max_steps,
        learning_rate=FLAGS.learning_rate,
        momentum=FLAGS.momentum, weight_decay=FLAGS.weight_decay, lr_schedule=FLAGS.lr_schedule,
        lr_patience=FLAGS.lr_patience, lr_max_decays=FLAGS.lr_max_decays,
        lr_boundaries=tuple(int(b) for b in FLAGS.lr_boundaries),
        lr_warmup_epochs=FLAGS.lr_warmup_epochs, mean_mode=FLAGS.mean,
        input_scale=FLAGS.input_scale, pca=FLAGS.pca, seed=FLAGS.seed,
        deterministic=FLAGS.deterministic, checkpoint_steps=FLAGS.checkpoint_steps,
        keep_checkpoints=FLAGS.keep_checkpoints, log_steps=FLAGS.log_steps,
        mixed_precision=FLAGS.mixed_precision, jit_compile=FLAGS.jit_compile,
        profile_steps=tuple(int(s) for s in FLAGS.profile_steps), histograms=FLAGS.histograms,
        model=model_flags.model_kwargs(FLAGS))


def make_strategy():
    """The tf.distribute strategy --strategy names (None for the default strategy)."""
    if FLAGS.devices and FLAGS.strategy != "mirrored":
        raise ValueError("--devices is for --strategy=mirrored")
    if FLAGS.strategy == "mirrored":
        return tf.distribute.MirroredStrategy(FLAGS.devices or None)
    if FLAGS.strategy == "multi_worker":
        try:
            cluster = json.loads(os.environ["TF_CONFIG"])["cluster"]
        except (KeyError, ValueError, TypeError):
            raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                             '(JSON: {"cluster": {"worker": ["host:port", ...]}, "task": '
                             '{"type": "worker", "index": N}}), see README "Scaling out"') from None
        if not cluster:
            raise ValueError("TF_CONFIG names no cluster")
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=FLAGS.worker_timeout)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    common.quiet_libraries()
    try:
        config = config_from_flags()
        train(config, make_strategy(), log=lambda line: print(line, flush=True))
    except (input_pipeline.DataError, ValueError, NonFiniteLoss, WorkerLost) as error:
        print(f"alexnet-train: error: {error}", file=sys.stderr)
        sys.exit(1)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
