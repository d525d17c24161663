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
    DIR/ckpt-<step>.corrupt/         a checkpoint that could not be read, set aside (never deleted)

Storage faults: a save checks the free space against the last checkpoint's
size first and stops with one line when it will not fit; a full disk during a
save removes the partial `*_temp` files and stops with the same line; a run
removes the temporaries that crashed runs left; a checkpoint that cannot be
read is set aside and the newest readable one is used instead.

Example:

    run_dir = RunDir("runs/quickstart")
    run = run_dir.read()
    run.config.eval_split, run.class_names, run_dir.normalization(), run_dir.checkpoint("best")

(`restore.restore_model` rebuilds a run's model from it.)
"""

import dataclasses
import glob
import os
import re
import shutil
import sys

import numpy as np
import tensorflow as tf

from alexnet_tf import errors, files
from alexnet_tf.config import TrainConfig
from alexnet_tf.data import dataset_stats

RUN_CONFIG = "run_config.json"
CHECKPOINT_NAME = "ckpt"
BEST = "best"
WORKERS = ".workers"
TRAIN_LOGS, VALIDATION_LOGS = "train", "validation"
WHICH = ("best", "latest")
CORRUPT_SUFFIX = ".corrupt"
# What a save in progress leaves when it is killed: TF's ckpt-N_temp/ (and its files), and our
# own atomic writes' .tmp-* files.
TEMPORARY = re.compile(rf"{CHECKPOINT_NAME}-\d+_temp.*|{re.escape(files.TEMPORARY_PREFIX)}.*")


def _warn(line):
    print(f"warning: {line}", file=sys.stderr, flush=True)


def _size(path):
    if os.path.isdir(path):
        return sum(_size(os.path.join(path, name)) for name in os.listdir(path))
    return os.path.getsize(path) if os.path.exists(path) else 0


def _checkpoint_files(prefix):
    """The files of checkpoint `prefix`: its .index and data shards."""
    return (glob.glob(glob.escape(prefix) + ".index") +
            glob.glob(glob.escape(prefix) + ".data-*"))


def checkpoint_bytes(prefix):
    """The size of checkpoint `prefix` on disk."""
    return sum(_size(p) for p in _checkpoint_files(prefix))


def variables_bytes(variables):
    """What `variables` take when saved (their element counts times their dtypes' sizes)."""
    return sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in variables)


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
        if not isinstance(document, dict):
            raise RunDirError(f"{path} is damaged: not a JSON object; restore it from a backup "
                              "or train the run again")
        try:
            config = TrainConfig.from_dict(document["train_config"])
            names, runtime = document["class_names"], document.get("runtime") or {}
            if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)
                    and isinstance(runtime, dict)):
                raise ValueError("class_names is not a list of names")
            return Run(config, names, runtime)
        except (TypeError, KeyError, ValueError, AttributeError) as error:
            raise RunDirError(f"{path} is not a run configuration this version reads "
                              f"({errors.first_line(error)}); restore it from a backup or train the "
                              "run again") from None

    def stats(self):
        """The training-set `dataset_stats.Stats` the run was trained with."""
        try:
            stats = dataset_stats.load_stats(self.path)
        except dataset_stats.StatsError as error:
            raise RunDirError(f"{error}; copy them from the training set's folder (the same "
                              "names) or train the run again") from None
        if stats is None:
            raise RunDirError(f"{self.path} has no training-set statistics "
                              f"({dataset_stats.STATS_FILE}); it was not written by alexnet-train")
        return stats

    def normalization(self, run=None):
        """The run's `dataset_stats.Normalization` (its statistics and preprocessing settings)."""
        return dataset_stats.Normalization.of((run or self.read()).config, self.stats())

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

    def save(self, manager, step, expected_bytes):
        """`manager.save(step)`, refused with one line when the disk cannot hold it.

        The free space is checked first against the size of the manager's last
        checkpoint (or `expected_bytes` before the first); a disk that fills up
        during the save gets the same line, and the partial `*_temp` files are
        removed. Either way every complete checkpoint is kept.
        """
        folder, latest = manager.directory, manager.latest_checkpoint
        needed = checkpoint_bytes(latest) if latest else expected_bytes
        target = os.path.join(folder, f"{CHECKPOINT_NAME}-{step}")
        kept = (f"; the last complete checkpoint is {latest}" if latest else
                "; no checkpoint was written yet")
        advice = "free space or lower --keep_checkpoints"
        if files.free_bytes(folder) < needed:
            raise files.disk_full(target, needed, advice, kept)
        try:
            return manager.save(checkpoint_number=step)
        except (tf.errors.OpError, OSError) as error:
            if not errors.is_disk_full(error):
                raise
            self.remove_temporaries(folder)
            raise files.disk_full(target, needed, advice, kept) from None

    def remove_temporaries(self, *folders):
        """Removes the `*_temp` checkpoint files and `.tmp-*` files that interrupted saves left.

        Without `folders`: in the run directory, best/ and every worker's folder.
        Returns (how many, bytes freed).
        """
        if not folders:
            folders = [self.path, os.path.join(self.path, BEST)] + [
                f for w in glob.glob(os.path.join(glob.escape(self.path), WORKERS, "*"))
                for f in (w, os.path.join(w, BEST))]
        count = freed = 0
        for folder in folders:
            if not os.path.isdir(folder):
                continue
            for name in os.listdir(folder):
                if TEMPORARY.fullmatch(name):
                    path = os.path.join(folder, name)
                    freed += _size(path)
                    count += 1
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        return count, freed

    def latest_checkpoint(self):
        """The newest checkpoint's path prefix, or None (not verified: see `readable_checkpoint`)."""
        return tf.train.latest_checkpoint(self.path)

    def readable_checkpoint(self, folder=None, warn=_warn):
        """The newest checkpoint in `folder` (default: DIR) that reads whole, or None.

        Each newer one that cannot be read (truncated, corrupt, a data file
        missing) is set aside as ckpt-N.corrupt/ (never deleted) with one
        warning line.
        """
        folder = folder or self.path
        for prefix in _checkpoints_newest_first(folder):
            problem = _unreadable(prefix)
            if problem is None:
                return prefix
            aside = _set_aside(prefix, folder)
            warn(f"checkpoint {prefix} cannot be read ({problem}); moved it to {aside} and "
                 "using the one before it")
        return None

    def checkpoint(self, which="best", warn=_warn):
        """The checkpoint `which` names: 'best', 'latest', or a path prefix like DIR/ckpt-500.

        'best' and 'latest' skip (and set aside) checkpoints that cannot be read;
        'best' falls back to the latest (a run shorter than one epoch, or a best
        that cannot be read). A path is used as given, or refused in one line.
        """
        if which in WHICH:
            path = self.readable_checkpoint(os.path.join(self.path, BEST), warn) \
                if which == "best" else None
            path = path or self.readable_checkpoint(self.path, warn)
            if path is None:
                if glob.glob(os.path.join(glob.escape(self.path), f"*{CORRUPT_SUFFIX}")):
                    raise RunDirError(f"{self.path} has no readable checkpoint (the unreadable "
                                      f"ones are set aside as *{CORRUPT_SUFFIX}); train again")
                raise RunDirError(f"{self.path} has no checkpoint yet; train first")
            return path
        if not tf.io.gfile.exists(which + ".index"):
            raise RunDirError(f"no checkpoint {which} (expected {which}.index)")
        problem = _unreadable(which)
        if problem is not None:
            raise RunDirError(f"checkpoint {which} cannot be read ({problem}); pass another "
                              "--checkpoint, or best or latest")
        return which



def weights_fingerprint(prefix):
    """The sha1 of checkpoint `prefix`'s .index file: it lists every tensor with the CRC32C of
    its bytes, so two checkpoints of the same weights share it (wherever they are stored)."""
    import hashlib
    with tf.io.gfile.GFile(prefix + ".index", "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def _checkpoints_newest_first(folder):
    """The checkpoints in `folder`, newest (highest step) first."""
    found = {}
    for index in glob.glob(os.path.join(glob.escape(folder), f"{CHECKPOINT_NAME}-*.index")):
        prefix = index[:-len(".index")]
        step = prefix.rsplit("-", 1)[-1]
        if step.isdigit():
            found[prefix] = int(step)
    return sorted(found, key=found.get, reverse=True)


def _unreadable(prefix):
    """None if every tensor of checkpoint `prefix` reads back, else why not (one line)."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError, OSError, RuntimeError) as error:
        return errors.first_line(error)
    return None


def _set_aside(prefix, folder):
    """Moves checkpoint `prefix`'s files into prefix.corrupt/ and drops it from the state file."""
    aside = prefix + CORRUPT_SUFFIX
    os.makedirs(aside, exist_ok=True)
    for path in _checkpoint_files(prefix):
        os.replace(path, os.path.join(aside, os.path.basename(path)))
    remaining = list(reversed(_checkpoints_newest_first(folder)))
    if remaining:
        tf.compat.v1.train.update_checkpoint_state(folder, remaining[-1], remaining)
    elif os.path.exists(os.path.join(folder, "checkpoint")):
        os.remove(os.path.join(folder, "checkpoint"))
    return aside
