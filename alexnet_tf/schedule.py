"""Learning-rate schedules whose state lives in variables, so a checkpoint carries it.

* `plateau` (the paper, section 5): divide by 10 when the validation error has
  not improved for `patience` epochs, at most `max_decays` (3) times.
* `step`: divide by 10 at the given epochs.
"""

import tensorflow as tf

from alexnet_tf import paper

SCHEDULES = ("plateau", "step")


class LearningRateSchedule(tf.Module):
    """Decides the learning rate at each epoch's end from the validation error.

    Args:
      initial: Learning rate at the start (0.01).
      kind: "plateau" or "step".
      patience: plateau: epochs without improvement before a decay.
      max_decays: plateau: how many decays at most (3 in the paper).
      boundaries: step: the epochs after which the rate is divided.
      factor: the divisor (10).
      min_delta: plateau: an improvement must exceed this much error.
    """

    def __init__(self, initial=paper.LEARNING_RATE, kind="plateau", patience=1,
                 max_decays=paper.LR_MAX_DECAYS, boundaries=(), factor=paper.LR_DECAY_FACTOR,
                 min_delta=0.0):
        super().__init__(name="lr_schedule")
        if kind not in SCHEDULES:
            raise ValueError(f"lr schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}.")
        self.kind, self.initial, self.factor = kind, float(initial), float(factor)
        self.patience, self.max_decays, self.min_delta = int(patience), int(max_decays), min_delta
        self.boundaries = tuple(sorted(int(b) for b in boundaries))
        self.best_error = tf.Variable(float("inf"), dtype=tf.float64, trainable=False)
        self.epochs_without_improvement = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.decays = tf.Variable(0, dtype=tf.int64, trainable=False)

    @property
    def learning_rate(self):
        return self.initial / self.factor ** int(self.decays.numpy())

    def end_of_epoch(self, epoch, validation_error):
        """Updates the state after `epoch` (1-based, completed); returns True if it decayed."""
        improved = validation_error < float(self.best_error.numpy()) - self.min_delta
        if improved:
            self.best_error.assign(validation_error)
            self.epochs_without_improvement.assign(0)
        else:
            self.epochs_without_improvement.assign_add(1)
        if self.kind == "step":
            due = sum(1 for b in self.boundaries if epoch >= b)
            decay = due > int(self.decays.numpy())
        else:
            decay = (int(self.epochs_without_improvement.numpy()) >= self.patience
                     and int(self.decays.numpy()) < self.max_decays)
        if decay:
            self.decays.assign_add(1)
            self.epochs_without_improvement.assign(0)
        return decay
