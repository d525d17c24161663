"""Learning-rate schedules whose state lives in variables, so a checkpoint carries it.

* `plateau` (the paper, section 5): divide by 10 when the validation error has
  not improved for `patience` epochs, at most `max_decays` (3) times.
* `step`: divide by 10 at the given epochs.
* `cosine` (not the paper; for short runs): a linear warm-up over the first
  `warmup_steps`, then half a cosine from the initial rate down to 0 at
  `total_steps`. It depends on the global step only, so a restart resumes it.

The schedule owns the rate the optimiser uses: `drive(optimizer)` once, then
`set_step(step)` before each step writes the rate of that step into the
optimiser's learning-rate variable (which the compiled step reads, and which
checkpoints keep where they always kept it).
"""

import math

import tensorflow as tf

from alexnet_tf import errors, paper
from alexnet_tf.config import SCHEDULES


class _Driven:
    """The optimiser whose rate a schedule sets: a plain holder, so that the optimiser does not
    become a checkpoint dependency of the schedule."""

    def __init__(self):
        self.optimizer = None


class LearningRateSchedule(tf.Module):
    """Decides the learning rate at each epoch's end from the validation error.

    Args:
      initial: Learning rate at the start (0.01).
      kind: "plateau", "step" or "cosine".
      patience: plateau: epochs without improvement before a decay.
      max_decays: plateau: how many decays at most (3 in the paper).
      boundaries: step: the epochs after which the rate is divided.
      factor: the divisor (10).
      min_delta: plateau: an improvement must exceed this much error.
      total_steps: cosine: the step at which the rate reaches 0 (the whole run's
        length, not a `--max_steps` cut, so a cut-short run follows the full one).
      warmup_steps: cosine: steps of linear warm-up from initial / warmup_steps.

    Example:

    >>> schedule = LearningRateSchedule(0.01, "cosine", total_steps=1000, warmup_steps=100)
    >>> schedule.learning_rate_at(99), schedule.learning_rate_at(550)
    (0.01, 0.005)
    >>> schedule.drive(optimizer)
    >>> schedule.set_step(0)          # before the step that follows step 0
    """

    def __init__(self, initial=paper.LEARNING_RATE, kind="plateau", patience=1,
                 max_decays=paper.LR_MAX_DECAYS, boundaries=(), factor=paper.LR_DECAY_FACTOR,
                 min_delta=0.0, total_steps=None, warmup_steps=0):
        super().__init__(name="lr_schedule")
        if kind not in SCHEDULES:
            raise errors.ConfigError(
                f"lr schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}.")
        self.kind, self.initial, self.factor = kind, float(initial), float(factor)
        self.patience, self.max_decays, self.min_delta = int(patience), int(max_decays), min_delta
        self.boundaries = tuple(sorted(int(b) for b in boundaries))
        if kind == "cosine" and not (total_steps and 0 <= warmup_steps < total_steps):
            raise errors.ConfigError(f"cosine needs 0 <= warmup_steps < total_steps, got "
                                     f"{warmup_steps} and {total_steps}.")
        self.total_steps, self.warmup_steps = total_steps, int(warmup_steps)
        self.best_error = tf.Variable(float("inf"), dtype=tf.float64, trainable=False)
        self.epochs_without_improvement = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.decays = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._driven = _Driven()

    def drive(self, optimizer):
        """From now on `set_step` sets `optimizer`'s learning rate."""
        self._driven.optimizer = optimizer
        self.set_step(0)

    def set_step(self, step):
        """Sets the optimiser's rate for the update that follows `step` completed steps."""
        self._driven.optimizer.learning_rate = self.learning_rate_at(step)

    @property
    def current(self):
        """The rate `set_step` last set, as the step uses it (float32)."""
        return float(self._driven.optimizer.learning_rate.numpy())

    @property
    def learning_rate(self):
        return self.initial / self.factor ** int(self.decays.numpy())

    def learning_rate_at(self, step):
        """The rate for the update that follows `step` completed steps."""
        if self.kind != "cosine":
            return self.learning_rate
        if step < self.warmup_steps:
            return self.initial * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.initial * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    def end_of_epoch(self, epoch, validation_error):
        """Updates the state after `epoch` (1-based, completed); returns True if it decayed."""
        improved = validation_error < float(self.best_error.numpy()) - self.min_delta
        if improved:
            self.best_error.assign(validation_error)
            self.epochs_without_improvement.assign(0)
        else:
            self.epochs_without_improvement.assign_add(1)
        if self.kind == "cosine":
            decay = False                       # the step alone decides the rate
        elif self.kind == "step":
            due = sum(1 for b in self.boundaries if epoch >= b)
            decay = due > int(self.decays.numpy())
        else:
            decay = (int(self.epochs_without_improvement.numpy()) >= self.patience
                     and int(self.decays.numpy()) < self.max_decays)
        if decay:
            self.decays.assign_add(1)
            self.epochs_without_improvement.assign(0)
        return decay
