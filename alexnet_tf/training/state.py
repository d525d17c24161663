"""A training run's state and what its checkpoint holds, declared once.

The state is the model, the optimiser (its velocities), the learning-rate
schedule (its state), the step and epoch counters and the dropout layers' RNG
state. `checkpoint_of` says how they are saved; training (`build_state`,
`restore_state`), `alexnet-import` and every tool that restores a run's
weights (`restore_weights`) go through it.
"""

import contextlib
import dataclasses
import functools

import keras
import tensorflow as tf

from alexnet_tf import errors
from alexnet_tf.config import FLOAT16, frozen_layers, lr_multiplier_map
from alexnet_tf.model.network import build_alexnet, freeze
from alexnet_tf.training.optimizer import PaperSGD
from alexnet_tf.training.rundir import RunDir, RunDirError, variables_bytes
from alexnet_tf.training.schedule import LearningRateSchedule


def dropout_states(model):
    """The dropout layers' RNG states, in layer order: what a resumed run needs to draw the same masks."""
    return [layer.seed_generator.state.value for layer in model.layers
            if isinstance(layer, keras.layers.Dropout) and hasattr(layer, "seed_generator")]


def averages_of(optimizer):
    """(the trained variables, their exponential moving averages) of an optimizer with --ema
    (PaperSGD's `use_ema`), else ([], [])."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)      # under loss scaling
    if optimizer is None or not inner.use_ema:
        return [], []
    return list(inner._trainable_variables), list(inner._model_variables_moving_average)


@contextlib.contextmanager
def averaged_weights(optimizer):
    """Within: the trained variables hold their moving averages (--ema); after, their own."""
    variables, averages = averages_of(optimizer)
    saved = [v.numpy() for v in variables]
    for variable, average in zip(variables, averages):
        variable.assign(average)
    try:
        yield bool(averages)
    finally:
        for variable, value in zip(variables, saved):
            variable.assign(value)


def checkpoint_of(model, step, epoch, optimizer=None, schedule=None, legacy=False):
    """The `tf.train.Checkpoint` of a run: what every checkpoint of it holds.

    Keras does not expose the dropout layers' RNG states to tf.train.Checkpoint:
    they are added as `rng`. Checkpoints of the earlier layout saved every
    non-trainable variable there instead (frozen weights a second time);
    `legacy=True` reads those.
    """
    rng = ([v.value for v in model.non_trainable_variables] if legacy
           else dropout_states(model))
    items = dict(model=model, step=step, epoch=epoch, rng=rng)
    if optimizer is not None:
        items.update(optimizer=optimizer, schedule=schedule)
        averages = averages_of(optimizer)[1]
        if averages:            # --ema: also by a path of their own, which `load_averages` reads
            items.update(averages=averages)
    return tf.train.Checkpoint(**items)


def restore_checkpoint(state, path):
    """Restores every part of `state` from checkpoint `path`, of either layout."""
    saved = sum(name.startswith("rng/") for name, _ in tf.train.list_variables(path))
    legacy = saved != len(dropout_states(state.model))
    checkpoint = (checkpoint_of(state.model, state.step, state.epoch, state.optimizer,
                                state.schedule, legacy=True) if legacy else state.checkpoint)
    checkpoint.restore(path).assert_existing_objects_matched()


def counters():
    """The step and epoch counters, at 0."""
    return (tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step"),
            tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch"))


def restore_weights(model, path):
    """Restores only the model's weights from checkpoint `path` (every weight must be there).

    A checkpoint that does not hold this network's weights is refused in one line.
    """
    try:
        tf.train.Checkpoint(model=model).restore(path).expect_partial() \
            .assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        raise RunDirError(f"checkpoint {path} does not hold this network's weights "
                          f"({errors.first_line(error)}); pass another checkpoint") from None


def load_averages(model, config, path):
    """--ema: the model's trained variables set to checkpoint `path`'s moving averages (in the
    order the run's optimizer had them: the layers that trained, as the run froze the others).
    Returns whether it did (False for a run without --ema)."""
    if not config.ema:
        return False
    trainable = [layer.trainable for layer in model.layers]
    if not config.unfreeze_at:        # the optimizer had the trained layers only
        freeze(model, frozen_layers(config.train_layers, config.freeze))
    variables = model.trainable_variables
    for layer, was in zip(model.layers, trainable):      # the caller's model as it came
        layer.trainable = was
    averages = [tf.Variable(tf.zeros(v.shape, v.dtype)) for v in variables]
    try:
        tf.train.Checkpoint(averages=averages).restore(path).expect_partial() \
            .assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        raise RunDirError(f"checkpoint {path} does not hold the weights' averages of --ema="
                          f"{config.ema} ({errors.first_line(error)}); pass another checkpoint") \
            from None
    for variable, average in zip(variables, averages):
        variable.assign(average)
    return True


def unfreeze_if_due(model, config, epoch):
    """--unfreeze_at: makes every layer trainable once `epoch` (completed epochs) reaches it;
    returns whether it did so now."""
    if not config.unfreeze_at or epoch + 1 < config.unfreeze_at:
        return False
    frozen = [layer for layer in model.layers if layer.weights and not layer.trainable]
    for layer in frozen:
        layer.trainable = True
    return bool(frozen)


def make_optimizer(config, precision, schedule):
    """The paper's SGD, its rate set by `schedule` (`LearningRateSchedule.set_step`)."""
    ema = dict(use_ema=True, ema_momentum=config.ema) if config.ema else {}
    optimizer = PaperSGD(schedule.learning_rate_at(0), config.momentum, config.weight_decay,
                         lr_multipliers=lr_multiplier_map(config.lr_multipliers), **ema)
    if precision == FLOAT16:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    schedule.drive(optimizer)
    return optimizer


@dataclasses.dataclass
class RunState:
    """What a checkpoint carries, and the managers that save it."""
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    schedule: LearningRateSchedule
    step: tf.Variable
    epoch: tf.Variable
    checkpoint: tf.train.Checkpoint = None
    latest: tf.train.CheckpointManager = None
    best: tf.train.CheckpointManager = None
    run_dir: RunDir = None

    def save(self, best=False, unless_saved=False):
        """Saves a checkpoint (and the best); a full disk stops the run with one line.

        `unless_saved`: not again if the newest checkpoint is of this step already.
        """
        step = int(self.step.numpy())
        newest = self.latest.latest_checkpoint
        if unless_saved and newest and newest.endswith(f"-{step}"):
            return newest
        path = self.run_dir.save(self.latest, step, self.checkpoint_bytes)
        if best:
            self.run_dir.save(self.best, step, self.checkpoint_bytes)
        return path

    @functools.cached_property
    def checkpoint_bytes(self):
        """About what a checkpoint takes on disk (the free-space check before the first)."""
        return variables_bytes(self.model.variables + self.optimizer.variables
                               + [self.step, self.epoch])


def build_state(config, strategy, num_classes, devices, precision, total_steps,
                 steps_per_epoch, initialize=True):
    """The run's model, optimiser, schedule and counters at step 0; `initialize=False` when a
    checkpoint is restored next (`resume_point`): the weights start as zeros."""
    schedule = LearningRateSchedule(config.learning_rate, config.lr_schedule, config.lr_patience,
                                    config.lr_max_decays, config.lr_boundaries,
                                    total_steps=total_steps,
                                    warmup_steps=round(config.lr_warmup_epochs * steps_per_epoch))
    with strategy.scope():
        model = build_alexnet(num_classes, config.model, devices=devices, seed=config.seed,
                              initialize=initialize)
        optimizer = make_optimizer(config, precision, schedule)
        if config.unfreeze_at:        # every layer's velocity from the start: one checkpoint
            optimizer.build(model.trainable_variables)     # layout before and after the switch
        freeze(model, frozen_layers(config.train_layers, config.freeze))
        if not config.unfreeze_at:
            optimizer.build(model.trainable_variables)
        step, epoch = counters()
    return RunState(model, optimizer, schedule, step, epoch)


def resume_point(run_dir, task, log):
    """The checkpoint a run resumes from, or None: it starts at step 0.

    `task` is None for the chief, which first removes what interrupted saves
    left and sets aside a checkpoint it cannot read; another worker resumes
    from the chief's newest, which the chief has checked.
    """
    if task is not None:
        return run_dir.latest_checkpoint()
    count, freed = run_dir.remove_temporaries()
    if count:
        log(f"Removed {count} temporary file(s) of interrupted saves in {run_dir.path} "
            f"({errors.megabytes(freed)} freed)")
    return run_dir.readable_checkpoint(warn=lambda line: log(f"warning: {line}"))


def restore_state(state, run_dir, keep, task, log, latest):
    """Sets up the state's checkpoints and restores `latest` (`resume_point`), if any.

    `task` is None for the chief (it saves into the run directory), else the
    worker's tag (it saves under .workers/).
    """
    state.checkpoint = checkpoint_of(state.model, state.step, state.epoch, state.optimizer,
                                     state.schedule)
    # Every worker saves (TF saves distributed variables collectively): the chief into the
    # run directory, the others into their own folders; all resume from the chief's.
    state.run_dir = run_dir
    state.latest, state.best = run_dir.checkpoint_managers(state.checkpoint, state.step, keep,
                                                           task)
    if latest:
        restore_checkpoint(state, latest)       # every part of the state, or an error
        # Epochs are counted from 1 in every message: the one the run goes on with.
        log(f"Resuming from step {int(state.step.numpy())} (epoch {int(state.epoch.numpy()) + 1}) "
            f"of {latest}")
    else:
        log(f"Starting from step 0 in {run_dir.path}")
