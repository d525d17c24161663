"""What a run writes for TensorBoard and the terminal: scalars, images, HParams, the progress line.

The chief writes train/ and validation/ under the run directory (`Writers`);
other workers write nothing. The progress line and the train scalars come from
`Progress`, every --log_steps steps.
"""

import dataclasses
import os
import time

import tensorflow as tf

from alexnet_tf import figures
from alexnet_tf.training.rundir import TRAIN_LOGS, VALIDATION_LOGS


# What TensorBoard's HParams dashboard compares: (group = the run's log folder, tag).
HPARAMS_METRICS = ((VALIDATION_LOGS, "top1_error"), (VALIDATION_LOGS, "top5_error"),
                   (VALIDATION_LOGS, "loss"), (TRAIN_LOGS, "top1_error"), (TRAIN_LOGS, "loss"))


def hparams_of(config, runtime):
    """The run's hyperparameters as HParams values (numbers, booleans, strings)."""
    values = {}
    for prefix, settings in (("", config.for_precision(runtime["mixed_precision"])),
                             ("model.", config.model)):
        for name, value in dataclasses.asdict(settings).items():
            if name in ("model", "by_precision", "model_dir", "data_dir", "profile_steps"):
                continue
            if isinstance(value, (tuple, list)):
                value = ",".join(map(str, value))
            values[prefix + name] = "" if value is None else value
    values.update(mixed_precision=runtime["mixed_precision"],
                  jit_compile=bool(runtime["jit_compile"]))
    return values


def write_hparams(run_dir, config, runtime, class_names):
    """Logs the run's hyperparameters for TensorBoard's HParams dashboard (DIR's own events).

    The session is the run directory; its metrics are the validation/ and train/
    scalars the run writes, so runs under one --logdir compare in the dashboard.
    """
    from tensorboard.plugins.hparams import api as hp
    values = hparams_of(config, runtime)
    values["classes"] = len(class_names)
    writer = tf.summary.create_file_writer(run_dir.path)
    with writer.as_default():
        hp.hparams_config(hparams=[hp.HParam(name) for name in values],
                          metrics=[hp.Metric(tag, group=group) for group, tag in HPARAMS_METRICS])
        hp.hparams(values, trial_id=os.path.basename(os.path.abspath(run_dir.path)))
    writer.close()


class Writers:
    """The run's TensorBoard writers: the chief's train/ and validation/, no-ops elsewhere."""

    def __init__(self, run_dir, chief):
        if chief:
            self.train = tf.summary.create_file_writer(run_dir.logs(TRAIN_LOGS))
            self.validation = tf.summary.create_file_writer(run_dir.logs(VALIDATION_LOGS))
        else:
            self.train = self.validation = tf.summary.create_noop_writer()

    def flush(self):
        self.train.flush()
        self.validation.flush()


def format_duration(seconds):
    """4000 -> '1h06m', 75 -> '1m15s'."""
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Sums each step's numbers; every `log_steps` steps writes the train scalars and a line.

    Args:
      batch_size: Global batch size (images per step).
      log_steps: How often to write.
      total_steps: The run's last step (for the ETA; always written).
      writer: The train/ summary writer.
      log: Where the progress line goes.
      start_step: The step this run (or its restart) starts from (for the ETA).

    Example:

    >>> progress = Progress(128, 20, 1000, writer, print, start_step=0)
    >>> if progress.step_done(20, loss=2.3, miss1=120.0, miss5=60.0):
    ...     progress.report(20, 0, learning_rate=0.01, weight_norm=41.0)
    """

    def __init__(self, batch_size, log_steps, total_steps, writer, log, start_step):
        self.batch_size, self.log_steps, self.total_steps = batch_size, log_steps, total_steps
        self.writer, self.log = writer, log
        self.start_step, self.start = start_step, time.time()
        self._reset()

    def _reset(self):
        self.loss = self.miss1 = self.miss5 = 0.0
        self.steps, self.window_start = 0, time.time()

    def step_done(self, s, loss, miss1, miss5):
        """Adds step `s` (1-based); True when it is time to `report`."""
        self.loss, self.miss1, self.miss5 = self.loss + loss, self.miss1 + miss1, self.miss5 + miss5
        self.steps += 1
        return s % self.log_steps == 0 or s == self.total_steps

    def report(self, s, e, learning_rate, weight_norm):
        """Writes the scalars and the line of the steps since the last report (epoch `e`, 0-based)."""
        n, images = self.steps, self.steps * self.batch_size
        images_per_second = images / max(time.time() - self.window_start, 1e-9)
        with self.writer.as_default(step=s):
            tf.summary.scalar("loss", self.loss / n)
            tf.summary.scalar("top1_error", self.miss1 / images)
            tf.summary.scalar("top5_error", self.miss5 / images)
            tf.summary.scalar("learning_rate", learning_rate)
            tf.summary.scalar("images_per_second", images_per_second)
            tf.summary.scalar("weight_norm", weight_norm)
        rate = (s - self.start_step) / max(time.time() - self.start, 1e-9)
        self.log(f"epoch {e + 1} step {s}/{self.total_steps} loss {self.loss / n:.4f} "
                 f"top-1 error {self.miss1 / images:.3f} lr {learning_rate:g} "
                 f"{images_per_second:.1f} img/s ETA "
                 f"{format_duration((self.total_steps - s) / max(rate, 1e-9))}")
        self._reset()


def epoch_summaries(model, writer, step, histograms):
    """conv1's kernels as an image (and, with `histograms`, every weight's histogram)."""
    grid = figures.kernel_grid(figures.conv1_kernels(model))
    with writer.as_default(step=step):
        tf.summary.image("conv1_kernels", grid[None], max_outputs=1)
        if histograms:
            for weight in model.trainable_weights:
                tf.summary.histogram(weight.path, weight.value)


def validation_summaries(writer, step, results, class_names):
    """The validation scalars and confusion matrix image of `metrics.dataset_metrics` results."""
    with writer.as_default(step=step):
        for name in ("loss", "top1_error", "top5_error"):
            tf.summary.scalar(name, results[name])
        if results["confusion"] is not None:
            tf.summary.image("confusion_matrix", figures.confusion_image(
                results["confusion"], class_names)[None], max_outputs=1)
