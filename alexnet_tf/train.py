"""The training loop: a custom tf.function step, the paper's optimiser and schedule.

`train(config)` reads top to bottom as the paper's procedure: where the run
computes (placement, precision), the data and its statistics, the model and
optimiser, the checkpoint to resume from, then epochs of steps, each epoch
ending in validation, summaries, the schedule's decision and checkpoints.

Resuming: the state in a checkpoint is the model, the optimiser's velocities,
the step and epoch counters, the schedule's state and the dropout RNG state.
The data order of an epoch follows from (seed, epoch), so a restarted run skips
the batches the epoch had already seen and continues exactly where it stopped.
"""

import dataclasses
import functools
import math
import os
import signal
import time

import keras
import tensorflow as tf

from alexnet_tf import (dataset_stats, errors, figures, finetune, hardware, input_pipeline,
                        metrics, sources)
from alexnet_tf.config import PER_PRECISION
from alexnet_tf.models import build_alexnet, resolve_tower_devices
from alexnet_tf.optimizer import PaperSGD
from alexnet_tf.rundir import TRAIN_LOGS, VALIDATION_LOGS, Run, RunDir, variables_bytes
from alexnet_tf.schedule import LearningRateSchedule


class WorkerLost(RuntimeError):
    """Another worker of a multi-worker job stopped; the message is one line."""


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# --- Where the run computes ---------------------------------------------------

LOCAL_TASK = "local"   # a single-process run (default or mirrored strategy)


def task_of(strategy):
    """(is_chief, tag) of this process: the chief writes the run's files, others write aside."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if task_type is None:
        return True, LOCAL_TASK
    task_id = int(resolver.task_id or 0)
    jobs = resolver.cluster_spec().as_dict()
    chief = task_type == "chief" if "chief" in jobs else (task_type == "worker" and task_id == 0)
    return chief, f"{task_type}_{task_id}"


def is_default_strategy(strategy):
    return strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy()


def tower_devices(config, strategy):
    """The towers' devices for `build_alexnet`: placed under the default strategy only."""
    devices = config.model.build_kwargs()["devices"]
    if is_default_strategy(strategy):
        return resolve_tower_devices(devices)
    if devices not in ("auto", None):
        raise errors.ConfigError(
            "tower placement (--towers_on) and data parallelism (--strategy) are alternatives: "
            "each replica holds the whole model; use --towers_on=none")
    return None   # TF ignores tf.device for mirrored variables


def resolve_runtime(config, placed_towers, data_parallel):
    """The precision and XLA setting this run uses on this machine, and why.

    Returns a dict for the run files: mixed_precision, jit_compile, their
    reasons, the hardware that decided them, and `warning` (a line to print
    about an explicit choice the hardware only emulates, or None).
    """
    found = hardware.detected()
    precision, precision_why, warning = hardware.resolve_precision(config.mixed_precision, found)
    jit, jit_why = hardware.resolve_jit(config.jit_compile, found, precision, placed_towers,
                                        data_parallel)
    if jit and found.accelerator is None:
        hardware.configure_xla_cpu()
    return {"mixed_precision": precision, "mixed_precision_reason": precision_why,
            "jit_compile": jit, "jit_compile_reason": jit_why, "warning": warning,
            "hardware": found.as_dict()}


def runtime_lines(runtime):
    """What the run says about its precision and XLA (and a warning, if any)."""
    lines = [runtime["warning"]] if runtime["warning"] else []
    return lines + [f"precision {runtime['mixed_precision']} ({runtime['mixed_precision_reason']}"
                    f"); XLA {'on' if runtime['jit_compile'] else 'off'} "
                    f"({runtime['jit_compile_reason']})"]


def _set_up_runtime(config, precision):
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_dtype_policy(hardware.KERAS_POLICIES[precision])


# --- The step -----------------------------------------------------------------


def make_optimizer(config, precision, schedule):
    """The paper's SGD, its rate set by `schedule` (`LearningRateSchedule.set_step`)."""
    optimizer = PaperSGD(schedule.learning_rate_at(0), config.momentum, config.weight_decay)
    if precision == hardware.FLOAT16:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    schedule.drive(optimizer)
    return optimizer


def make_train_step(model, optimizer, global_batch_size, strategy, jit_compile=False):
    """The tf.function train step over a distributed batch; returns (loss, top-1, top-5 misses).

    Under the default strategy, gradients come from `tf.gradients`, which creates
    each gradient op with the device of its forward op, so tower b's backward
    pass stays on tower b's device (a GradientTape leaves them unplaced). Under
    a data-parallel strategy the towers are unplaced and a GradientTape is used:
    MultiWorkerMirroredStrategy cannot all-reduce `tf.gradients`' outputs
    ("destinations can not be empty").
    """
    variables = model.trainable_variables
    colocate = is_default_strategy(strategy)

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = metrics.cross_entropy(labels, logits, global_batch_size)
            scaled = optimizer.scale_loss(loss)
        if colocate:
            grads = tf.gradients(scaled, [v.value for v in variables])
        else:
            grads = tape.gradient(scaled, variables)
        optimizer.apply(grads, variables)
        return (loss,) + metrics.top_k_errors(labels, logits)

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def train_step(batch):
        results = strategy.run(replica_step, args=batch)
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, r, axis=None) for r in results]

    return train_step


def make_eval_step(model):
    """A tf.function from a batch of images (any batch size, one trace) to logits."""
    return tf.function(lambda images: model(images, training=False), reduce_retracing=True)


def distributed_epoch(strategy, source, normalization, config, epoch, done_in_epoch,
                      steps_per_epoch):
    """The rest of one epoch as a distributed dataset: each worker reads its own shard.

    Each replica gets batch_size / replicas images a step; a worker's pipeline
    keeps its shard of the epoch's order (never the whole set), and every
    worker yields exactly the epoch's remaining steps.
    """
    def dataset_fn(context):
        per_replica = context.get_per_replica_batch_size(config.batch_size)
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        return input_pipeline.train_dataset(
            source, normalization, per_replica, split=config.train_split, seed=config.seed,
            epoch=epoch, pca=config.pca, image_size=config.image_size,
            skip_batches=done_in_epoch * local_replicas,
            max_batches=(steps_per_epoch - done_in_epoch) * local_replicas,
            shard=(context.num_input_pipelines, context.input_pipeline_id))
    return strategy.distribute_datasets_from_function(dataset_fn)


# What a collective op raises when a peer worker is gone or its collectives timed out.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
               tf.errors.AbortedError, tf.errors.CancelledError)


def _peer_lost_message(error, task, run_dir):
    first_line = (error.message or type(error).__name__).strip().splitlines()[0][:200]
    latest = run_dir.latest_checkpoint()
    return (f"{task}: another worker stopped responding ({first_line}); restart every worker "
            f"with the same flags to resume from the last checkpoint ({latest or 'none yet'})")


def weight_norm(model):
    kernels = [w for w in model.trainable_weights if len(w.shape) >= 2]
    return float(tf.linalg.global_norm([tf.cast(k.value, tf.float32) for k in kernels]))


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        del frame
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# --- The run ------------------------------------------------------------------


@dataclasses.dataclass
class _State:
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


def _build_state(config, strategy, num_classes, devices, precision, total_steps,
                 steps_per_epoch):
    schedule = LearningRateSchedule(config.learning_rate, config.lr_schedule, config.lr_patience,
                                    config.lr_max_decays, config.lr_boundaries,
                                    total_steps=total_steps,
                                    warmup_steps=round(config.lr_warmup_epochs * steps_per_epoch))
    with strategy.scope():
        model = build_alexnet(num_classes, seed=config.seed,
                              **{**config.model.build_kwargs(), "devices": devices})
        finetune.freeze(model, config.train_layers, config.freeze)
        optimizer = make_optimizer(config, precision, schedule)
        optimizer.build(model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    return _State(model, optimizer, schedule, step, epoch)


def _restore(state, run_dir, keep, task, log):
    """Sets up the state's checkpoints and restores the newest one of the chief's, if any.

    `task` is None for the chief (it saves into the run directory), else the
    worker's tag (it saves under .workers/).
    """
    # Keras does not expose the dropout layers' RNG states to tf.train.Checkpoint: add
    # them (the model's non-trainable variables) so a resumed run draws the same masks.
    state.checkpoint = tf.train.Checkpoint(
        model=state.model, optimizer=state.optimizer, step=state.step, epoch=state.epoch,
        schedule=state.schedule, rng=[v.value for v in state.model.non_trainable_variables])
    # Every worker saves (TF saves distributed variables collectively): the chief into the
    # run directory, the others into their own folders; all resume from the chief's.
    state.run_dir = run_dir
    if task is None:
        count, freed = run_dir.remove_temporaries()
        if count:
            log(f"Removed {count} temporary file(s) of interrupted saves in {run_dir.path} "
                f"({errors.megabytes(freed)} freed)")
        latest = run_dir.readable_checkpoint(warn=lambda line: log(f"warning: {line}"))
    else:
        latest = run_dir.latest_checkpoint()     # the chief's, which the chief has checked
    state.latest, state.best = run_dir.checkpoint_managers(state.checkpoint, state.step, keep,
                                                           task)
    if latest:
        state.checkpoint.restore(latest).assert_existing_objects_matched()
        log(f"Resuming from step {int(state.step.numpy())} (epoch {int(state.epoch.numpy())}) "
            f"of {latest}")
    else:
        log(f"Starting from step 0 in {run_dir.path}")


def train(config, strategy=None, log=print):
    """Trains (or resumes training) AlexNet as `config` says; returns the final validation metrics."""
    strategy = strategy or tf.distribute.get_strategy()
    if config.train_layers and config.freeze:
        raise errors.ConfigError("give --train_layers (what trains) or --freeze (what does not), "
                                 "not both")
    # Fine-tuning: the source's network options and (by default) its preprocessing.
    init = finetune.Source.locate(config.init_from) if config.init_from else None
    if init:
        config = finetune.with_source_settings(config, init, log)
    # Where and in what precision the run computes; the recipe for that precision.
    devices = tower_devices(config, strategy)
    chief, task = task_of(strategy)
    runtime = resolve_runtime(config, any(devices or ()), not is_default_strategy(strategy))
    precision = runtime["mixed_precision"]
    recipe, config = config, config.for_precision(precision)
    runtime["settings"] = {name: getattr(config, name) for name in PER_PRECISION}
    runtime["epochs"] = config.epochs
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise errors.ConfigError(f"--batch_size={config.batch_size} is not divisible by the "
                                 f"{replicas} replicas; use a multiple of {replicas}")
    _set_up_runtime(config, precision)

    # Data: source, training-set statistics (computed once, stored beside the data).
    source = sources.open_source(config.dataset, config.data_dir, config.max_megapixels)
    if init and config.source_stats:
        stats = init.run_dir.stats()
    else:
        stats = dataset_stats.stats_for(source, config.train_split)
    normalization = config.normalization(stats)
    num_classes = len(source.class_names)
    steps_per_epoch = source.num_examples(config.train_split) // config.batch_size
    if steps_per_epoch == 0:
        raise sources.DataError(
            f"--batch_size={config.batch_size} is larger than the {config.train_split} split "
            f"({source.num_examples(config.train_split)} images); use a smaller batch")
    total_steps = config.epochs * steps_per_epoch
    last_step = min(total_steps, config.max_steps or total_steps)
    runtime["steps_per_epoch"], runtime["last_step"] = steps_per_epoch, last_step
    run_dir = RunDir(config.model_dir)
    if chief:
        run_dir.write(Run(recipe, source.class_names, runtime), stats)

    # Model, optimiser, schedule and the checkpoint they resume from.
    state = _build_state(config, strategy, num_classes, devices, precision, total_steps,
                         steps_per_epoch)
    _restore(state, run_dir, config.keep_checkpoints if chief else 1, None if chief else task,
             log)
    if init and int(state.step.numpy()) == 0:
        finetune.load_matching(state.model, init, log)
    frozen = finetune.frozen_layers(config.train_layers, config.freeze)
    if frozen:
        log(f"Frozen (not trained): {', '.join(frozen)}")
    if chief:
        for line in runtime_lines(runtime):
            log(line)
    epochs_note = (f" (the --epochs entry for {precision})"
                   if config.epochs != recipe.epochs else "")
    log(f"{source.name}: {source.num_examples(config.train_split)} training images, "
        f"{num_classes} classes, {steps_per_epoch} steps/epoch, {config.epochs} epochs"
        f"{epochs_note}, training to step {last_step}")

    train_step = make_train_step(state.model, state.optimizer, config.batch_size, strategy,
                                 runtime["jit_compile"])
    eval_step = make_eval_step(state.model)
    eval_data = input_pipeline.eval_dataset(source, normalization, config.batch_size,
                                            split=config.eval_split, image_size=config.image_size)
    writers = _Writers(run_dir, chief)
    if chief:
        write_hparams(run_dir, recipe, runtime, source.class_names)

    def validate():
        return _validate(eval_step, eval_data, writers.validation, int(state.step.numpy()), log,
                         source.class_names)

    metrics_, validated_at = None, -1
    progress = Progress(config.batch_size, config.log_steps, last_step, writers.train, log,
                        start_step=int(state.step.numpy()))
    with _StopRequest() as stop:
        try:
            while int(state.step.numpy()) < last_step:
                # One epoch (or its rest, after a restart mid-epoch).
                e = int(state.epoch.numpy())
                done_in_epoch = int(state.step.numpy()) - e * steps_per_epoch
                for batch in distributed_epoch(strategy, source, normalization, config, e,
                                               done_in_epoch, steps_per_epoch):
                    s, results = _one_step(train_step, batch, state, config, run_dir)
                    if progress.step_done(s, *results):
                        progress.report(s, e, state.schedule.current, weight_norm(state.model))
                    if s % config.checkpoint_steps == 0:
                        state.save()
                    if stop.signal or s >= last_step:
                        break
                if stop.signal:
                    log(f"{stop.signal}: saved {state.save()}; run again with the same "
                        "--model_dir to resume")
                    return metrics_
                if int(state.step.numpy()) % steps_per_epoch == 0:     # the epoch is complete
                    metrics_ = _end_of_epoch(state, validate, writers.train, config, log)
                    validated_at = int(state.step.numpy())
        except PEER_ERRORS as error:
            if task == LOCAL_TASK:
                raise
            raise WorkerLost(_peer_lost_message(error, task, run_dir)) from None
    if validated_at != int(state.step.numpy()):     # a run cut short by --max_steps
        metrics_ = validate()
        _end_of_epoch_summaries(state.model, writers.train, int(state.step.numpy()),
                                config.histograms)
    state.save(unless_saved=True)
    writers.flush()
    return metrics_


def _one_step(train_step, batch, state, config, run_dir):
    """Runs the step that follows the current one; returns (steps done, (loss, misses))."""
    s = int(state.step.numpy())
    if s in config.profile_steps[:1]:
        tf.profiler.experimental.start(run_dir.logs(TRAIN_LOGS))
    state.schedule.set_step(s)
    loss, miss1, miss5 = (float(t) for t in train_step(batch))
    if not math.isfinite(loss):
        raise NonFiniteLoss(
            f"the loss became {loss} at step {s + 1}; stopped without saving, the last good "
            f"checkpoint ({state.latest.latest_checkpoint}) is intact: lower --learning_rate "
            "or use --kernel_init=he")
    state.step.assign_add(1)
    if s + 1 in config.profile_steps[1:2]:
        tf.profiler.experimental.stop()
    return s + 1, (loss, miss1, miss5)


def _end_of_epoch(state, validate, train_writer, config, log):
    """Validation, summaries, the schedule's decision and the checkpoints; returns the metrics."""
    state.epoch.assign_add(1)
    results = validate()
    step = int(state.step.numpy())
    _end_of_epoch_summaries(state.model, train_writer, step, config.histograms)
    improved = results["top1_error"] < float(state.schedule.best_error.numpy())
    if state.schedule.end_of_epoch(int(state.epoch.numpy()), results["top1_error"]):
        log(f"learning rate divided by {state.schedule.factor:g}: now "
            f"{state.schedule.learning_rate:g}")
    state.save(best=improved)
    return results


def _validate(eval_step, eval_data, writer, step, log, class_names):
    results = metrics.dataset_metrics(eval_step, eval_data)
    with writer.as_default(step=step):
        for name in ("loss", "top1_error", "top5_error"):
            tf.summary.scalar(name, results[name])
        if results["confusion"] is not None:
            tf.summary.image("confusion_matrix", figures.confusion_image(
                results["confusion"], class_names)[None], max_outputs=1)
    log(f"validation at step {step}: loss {results['loss']:.4f} "
        f"top-1 error {results['top1_error']:.4f} top-5 error {results['top5_error']:.4f} "
        f"({results['examples']} images)")
    return results


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


class _Writers:
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


def _format_eta(seconds):
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
                 f"{_format_eta((self.total_steps - s) / max(rate, 1e-9))}")
        self._reset()


def _end_of_epoch_summaries(model, writer, step, histograms):
    grid = figures.kernel_grid(figures.conv1_kernels(model))
    with writer.as_default(step=step):
        tf.summary.image("conv1_kernels", grid[None], max_outputs=1)
        if histograms:
            for weight in model.trainable_weights:
                tf.summary.histogram(weight.path, weight.value)
