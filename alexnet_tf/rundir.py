"""A training run's directory: the one module that knows its files and their formats.

Layout of DIR (written by alexnet-train; read by eval, export, predict,
retrieve, figures and a resumed run):

    DIR/run_config.json              the TrainConfig, class names, runtime choices
    DIR/alexnet_tf_stats.json        the training set's statistics (`dataset_stats`),
    DIR/alexnet_tf_mean_image.npy      copied from beside the dataset
    DIR/ckpt-<step>.{index,data-*}   checkpoints, the last --keep_checkpoints
    DIR/checkpoint                   TensorFlow's pointer to the newest
    DIR/best/ckpt-<step>.*           the checkpoint of the best validation top-1
    DIR/train/, DIR/validation/      TensorBoard event files
    DIR/.workers/<task>/             a multi-worker job's non-chief checkpoints

Example:

    run_dir = RunDir("runs/quickstart")
    model, run, path = run_dir.restore_model("best")
    run.config.eval_split, run.class_names, run_dir.normalization()
"""

import dataclasses
import os

import tensorflow as tf

from alexnet_tf import dataset_stats, errors, files
from alexnet_tf.config import TrainConfig
from alexnet_tf.models import build_alexnet

RUN_CONFIG = "run_config.json"
CHECKPOINT_NAME = "ckpt"
BEST = "best"
WORKERS = ".workers"
TRAIN_LOGS, VALIDATION_LOGS = "train", "validation"
WHICH = ("best", "latest")


class RunDirError(errors.UserError):
    """A run directory that cannot be used; the message is one line."""


@dataclasses.dataclass
class Run:
    """What run_config.json holds, typed.

    Attributes:
      config: The run's `TrainConfig` as given (its `by_precision` entries included).
      class_names: One name per output, in output order.
      runtime: What the run resolved on its machine: mixed_precision,
        jit_compile, their reasons, the hardware, and the per-precision settings
        it used (empty for runs older than 2026-11-23).
    """
    config: TrainConfig
    class_names: list
    runtime: dict = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self):
        return len(self.class_names)


class RunDir:
    """A run directory on disk.

    Args:
      path: The folder (--model_dir).
    """

    def __init__(self, path):
        self.path = path

    def __repr__(self):
        return f"RunDir({self.path!r})"

    # -- the run's files ------------------------------------------------------

    def write(self, run, stats):
        """Writes run_config.json and the statistics, each atomically."""
        os.makedirs(self.path, exist_ok=True)
        files.atomic_write_json(os.path.join(self.path, RUN_CONFIG), {
            "train_config": run.config.to_dict(), "class_names": list(run.class_names),
            "num_classes": run.num_classes, "runtime": run.runtime})
        dataset_stats.save_stats(stats, self.path)

    def read(self):
        """The `Run` in run_config.json."""
        path = os.path.join(self.path, RUN_CONFIG)
        if not os.path.exists(path):
            raise RunDirError(f"{self.path} is not a training run (no {RUN_CONFIG}); pass the "
                              "--model_dir that alexnet-train wrote")
        document = files.read_json(path)
        try:
            config = TrainConfig.from_dict(document["train_config"])
            return Run(config, list(document["class_names"]), document.get("runtime") or {})
        except (TypeError, KeyError, ValueError) as error:
            raise RunDirError(f"{path} is not a run configuration this version reads ({error}); "
                              "train the run again with this version") from None

    def stats(self):
        """The training-set `dataset_stats.Stats` the run was trained with."""
        stats = dataset_stats.load_stats(self.path)
        if stats is None:
            raise RunDirError(f"{self.path} has no training-set statistics "
                              f"({dataset_stats.STATS_FILE}); it was not written by alexnet-train")
        return stats

    def normalization(self, run=None):
        """The run's `dataset_stats.Normalization` (its statistics, mean mode and input scale)."""
        config = (run or self.read()).config
        return dataset_stats.Normalization(self.stats(), config.mean_mode, config.input_scale)

    def logs(self, name):
        """The TensorBoard folder `name` (TRAIN_LOGS or VALIDATION_LOGS)."""
        return os.path.join(self.path, name)

    # -- checkpoints ----------------------------------------------------------

    def checkpoint_dir(self, task=None):
        """Where a task saves: DIR for the chief (task None), DIR/.workers/<task> otherwise."""
        return self.path if task is None else os.path.join(self.path, WORKERS, task)

    def checkpoint_managers(self, checkpoint, step, keep, task=None):
        """(latest, best) `tf.train.CheckpointManager`s of a task's checkpoints."""
        folder = self.checkpoint_dir(task)
        latest = tf.train.CheckpointManager(checkpoint, folder, keep, step_counter=step,
                                            checkpoint_name=CHECKPOINT_NAME)
        best = tf.train.CheckpointManager(checkpoint, os.path.join(folder, BEST), 1,
                                          step_counter=step, checkpoint_name=CHECKPOINT_NAME)
        return latest, best

    def latest_checkpoint(self):
        """The newest checkpoint's path prefix, or None."""
        return tf.train.latest_checkpoint(self.path)

    def checkpoint(self, which="best"):
        """The checkpoint `which` names: 'best', 'latest', or a path prefix like DIR/ckpt-500."""
        if which in WHICH:
            path = tf.train.latest_checkpoint(os.path.join(self.path, BEST)) \
                if which == "best" else None
            path = path or self.latest_checkpoint()    # best: a run shorter than one epoch
            if path is None:
                raise RunDirError(f"{self.path} has no checkpoint yet; train first")
            return path
        if not tf.io.gfile.exists(which + ".index"):
            raise RunDirError(f"no checkpoint {which} (expected {which}.index)")
        return which

    def build_model(self, run=None, devices=None):
        """The run's model, freshly initialised, its towers on `devices` (None: unplaced)."""
        run = run or self.read()
        kwargs = run.config.model.build_kwargs()
        kwargs["devices"] = devices
        return build_alexnet(run.num_classes, **kwargs)

    def restore_model(self, which="best", devices=None):
        """(model, run, checkpoint path): the run's model with the checkpoint `which` restored."""
        run = self.read()
        model = self.build_model(run, devices)
        path = self.checkpoint(which)
        tf.train.Checkpoint(model=model).restore(path).expect_partial() \
            .assert_existing_objects_matched()
        return model, run, path
