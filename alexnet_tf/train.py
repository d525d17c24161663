"""The training loop: a custom tf.function step, the paper's optimiser and schedule.

`train(config)` reads top to bottom: data and statistics, model and optimiser
(inside a tf.distribute strategy's scope), checkpoint restore, then epochs of
steps with validation, summaries and checkpoints at their ends.

Resuming: the state in a checkpoint is the model, the optimiser's velocities,
the step and epoch counters, the schedule's state and the dropout RNG state.
The data order of an epoch follows from (seed, epoch), so a restarted run skips
the batches the epoch had already seen and continues exactly where it stopped.
"""

import dataclasses
import json
import math
import os
import signal
import time
from typing import Optional

import keras
import tensorflow as tf

from alexnet_tf import figures, hardware, input_pipeline, paper
from alexnet_tf.models import build_alexnet, resolve_tower_devices
from alexnet_tf.optimizer import PaperSGD
from alexnet_tf.schedule import LearningRateSchedule

RUN_CONFIG = "run_config.json"
# Resolved precisions (hardware.resolve_precision) -> Keras dtype policies.
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on (the CLI's flags, one to one)."""
    model_dir: str
    dataset: str = input_pipeline.BUILT_IN
    data_dir: Optional[str] = None
    train_split: str = "train"
    eval_split: str = "validation"
    batch_size: int = paper.BATCH_SIZE
    epochs: int = paper.EPOCHS
    # ((precision, epochs), ...): a run computing in that precision trains that many epochs
    # instead (--epochs=14,float32:4), so one recipe fits hardware of different speeds.
    epochs_by_precision: tuple = ()
    max_steps: Optional[int] = None
    learning_rate: float = paper.LEARNING_RATE
    momentum: float = paper.MOMENTUM
    weight_decay: float = paper.WEIGHT_DECAY
    lr_schedule: str = "plateau"
    lr_patience: int = 1
    lr_max_decays: int = paper.LR_MAX_DECAYS
    lr_boundaries: tuple = ()
    lr_warmup_epochs: float = 0.0
    mean_mode: str = "image"
    input_scale: str = "none"
    pca: bool = True
    seed: int = 0
    deterministic: bool = False
    checkpoint_steps: int = 1000
    keep_checkpoints: int = 3
    log_steps: int = 20
    mixed_precision: str = "auto"      # auto (by the hardware: hardware.py), float32, ...
    jit_compile: str = "auto"          # auto (by the hardware), "true" or "false"
    profile_steps: tuple = ()
    histograms: bool = False
    model: dict = dataclasses.field(default_factory=dict)   # build_alexnet keyword arguments

    def epochs_for(self, precision):
        """The epochs of a run that computes in `precision` (see `epochs_by_precision`)."""
        return dict(self.epochs_by_precision).get(precision, self.epochs)

    @property
    def image_size(self):
        """The model's input side, which the pipelines crop to (224, or 227)."""
        return self.model.get("image_size", paper.IMAGE_SIZE)


def parse_epochs(text):
    """(epochs, epochs_by_precision) of an --epochs value such as "90" or "14,float32:4".

    A plain number is every run's length; "PRECISION:N" entries give the length
    of a run that computes in that precision (after --mixed_precision=auto has
    chosen it), so that one recipe fits both fast and slow hardware.
    """
    default, by_precision = None, []
    for part in str(text).split(","):
        name, _, number = part.strip().rpartition(":")
        if not number.strip().isdigit() or int(number) < 1:
            raise ValueError(f"--epochs={text}: {part.strip()!r} is not a number of epochs >= 1 "
                             "(write e.g. 90, or 14,float32:4)")
        if not name:
            if default is not None:
                raise ValueError(f"--epochs={text} gives two default lengths; give one number")
            default = int(number)
        elif name.strip() not in hardware.PRECISIONS:
            raise ValueError(f"--epochs={text}: {name.strip()!r} is not a precision (one of "
                             f"{', '.join(hardware.PRECISIONS)})")
        else:
            by_precision.append((name.strip(), int(number)))
    if default is None:
        raise ValueError(f"--epochs={text} needs a plain number for the other precisions, e.g. "
                         "14,float32:4")
    return default, tuple(by_precision)


class WorkerLost(RuntimeError):
    """Another worker of a multi-worker job stopped; the message is one line."""


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


def distributed_epoch(strategy, source, stats, config, epoch, done_in_epoch, steps_per_epoch):
    """The rest of one epoch as a distributed dataset: each worker reads its own shard.

    Each replica gets batch_size / replicas images a step; a worker's pipeline
    keeps its shard of the epoch's order (never the whole set), and every
    worker yields exactly the epoch's remaining steps.
    """
    def dataset_fn(context):
        per_replica = context.get_per_replica_batch_size(config.batch_size)
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        return input_pipeline.train_dataset(
            source, stats, per_replica, split=config.train_split, seed=config.seed, epoch=epoch,
            mean_mode=config.mean_mode, input_scale=config.input_scale, pca=config.pca,
            skip_batches=done_in_epoch * local_replicas, num_shards=context.num_input_pipelines,
            shard_index=context.input_pipeline_id,
            max_batches=(steps_per_epoch - done_in_epoch) * local_replicas,
            image_size=config.image_size)
    return strategy.distribute_datasets_from_function(dataset_fn)


# What a collective op raises when a peer worker is gone or its collectives timed out.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
               tf.errors.AbortedError, tf.errors.CancelledError)


def _peer_lost_message(error, task, model_dir):
    first_line = (error.message or type(error).__name__).strip().splitlines()[0][:200]
    latest = tf.train.latest_checkpoint(model_dir)
    return (f"{task}: another worker stopped responding ({first_line}); restart every worker "
            f"with the same flags to resume from the last checkpoint ({latest or 'none yet'})")


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def cross_entropy(labels, logits, global_batch_size):
    """Softmax cross-entropy summed over the replica's batch, divided by the global batch."""
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=tf.cast(logits, tf.float32))
    return tf.reduce_sum(per_example) / global_batch_size


def top_k_errors(labels, scores):
    """Counts of top-1 and top-5 misses in a batch (float32 scalars)."""
    scores = tf.cast(scores, tf.float32)
    k5 = min(5, scores.shape[-1])
    miss1 = tf.logical_not(tf.math.in_top_k(labels, scores, 1))
    miss5 = tf.logical_not(tf.math.in_top_k(labels, scores, k5))
    return tf.reduce_sum(tf.cast(miss1, tf.float32)), tf.reduce_sum(tf.cast(miss5, tf.float32))


def make_optimizer(config, precision):
    optimizer = PaperSGD(config.learning_rate, config.momentum, config.weight_decay)
    if precision == hardware.FLOAT16:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
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
            loss = cross_entropy(labels, logits, global_batch_size)
            scaled = optimizer.scale_loss(loss)
        if colocate:
            grads = tf.gradients(scaled, [v.value for v in variables])
        else:
            grads = tape.gradient(scaled, variables)
        optimizer.apply(grads, variables)
        return (loss,) + top_k_errors(labels, logits)

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def train_step(batch):
        results = strategy.run(replica_step, args=batch)
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, r, axis=None) for r in results]

    return train_step


def make_eval_step(model):
    """A tf.function from a batch of images (any batch size, one trace) to logits."""
    return tf.function(lambda images: model(images, training=False), reduce_retracing=True)


def evaluate(eval_step, dataset, num_classes):
    """Mean loss and top-1 / top-5 error of centre-crop batches."""
    loss, miss1, miss5, count = 0.0, 0.0, 0.0, 0
    for images, labels in dataset:
        logits = eval_step(images)
        n = int(labels.shape[0])
        loss += float(cross_entropy(labels, logits, 1.0))
        m1, m5 = top_k_errors(labels, logits)
        miss1, miss5, count = miss1 + float(m1), miss5 + float(m5), count + n
    count = max(count, 1)
    return {"loss": loss / count, "top1_error": miss1 / count, "top5_error": miss5 / count,
            "examples": count}


def weight_norm(model):
    kernels = [w for w in model.trainable_weights if len(w.shape) >= 2]
    return float(tf.linalg.global_norm([tf.cast(k.value, tf.float32) for k in kernels]))


def write_run_files(config, source, stats, model_dir, runtime):
    """What eval/export need besides the checkpoint: config, class names, statistics.

    `runtime` records what the run resolved on its machine (precision, XLA, the
    hardware that decided them); a resumed run rewrites it.
    """
    os.makedirs(model_dir, exist_ok=True)
    run = {"train_config": dataclasses.asdict(config), "class_names": source.class_names,
           "num_classes": len(source.class_names), "runtime": runtime}
    input_pipeline.atomic_write(os.path.join(model_dir, RUN_CONFIG),
                                json.dumps(run, indent=2, default=list).encode())
    input_pipeline.save_stats(stats, model_dir)


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
    keras.mixed_precision.set_dtype_policy(PRECISIONS[precision])


def _format_eta(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def train(config, strategy=None, log=print):
    """Trains (or resumes training) AlexNet as `config` says; returns the final validation metrics."""
    strategy = strategy or tf.distribute.get_strategy()
    # Settings that can be checked before any work is done.
    model_kwargs = dict(config.model)
    if is_default_strategy(strategy):
        model_kwargs["devices"] = resolve_tower_devices(model_kwargs.get("devices", "auto"))
    elif model_kwargs.get("devices", "auto") not in ("auto", None):
        raise ValueError("tower placement (--towers_on) and data parallelism (--strategy) are "
                         "alternatives: each replica holds the whole model; use --towers_on=none")
    else:
        model_kwargs["devices"] = None   # TF ignores tf.device for mirrored variables
    chief, task = task_of(strategy)
    # Checkpoints: the chief's in model_dir; every other worker must write too (TF saves
    # distributed variables collectively), into its own folder under model_dir/.workers.
    save_dir = config.model_dir if chief else os.path.join(config.model_dir, ".workers", task)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(f"--batch_size={config.batch_size} is not divisible by the "
                         f"{replicas} replicas; use a multiple of {replicas}")
    placed = any(model_kwargs["devices"] or ())
    runtime = resolve_runtime(config, placed, not is_default_strategy(strategy))
    _set_up_runtime(config, runtime["mixed_precision"])

    # Data: source, training-set statistics (computed once, stored beside the data).
    source = input_pipeline.open_source(config.dataset, config.data_dir)
    stats = input_pipeline.stats_for(source, config.train_split)
    num_classes = len(source.class_names)
    steps_per_epoch = source.num_examples(config.train_split) // config.batch_size
    if steps_per_epoch == 0:
        raise input_pipeline.DataError(
            f"--batch_size={config.batch_size} is larger than the {config.train_split} split "
            f"({source.num_examples(config.train_split)} images); use a smaller batch")
    epochs = config.epochs_for(runtime["mixed_precision"])
    runtime["epochs"] = epochs
    epochs_note = (f" (the --epochs entry for {runtime['mixed_precision']})"
                   if epochs != config.epochs else "")
    total_steps = epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    if chief:
        write_run_files(config, source, stats, config.model_dir, runtime)

    # Model, optimiser and everything a checkpoint carries.
    with strategy.scope():
        model = build_alexnet(num_classes, seed=config.seed, **model_kwargs)
        optimizer = make_optimizer(config, runtime["mixed_precision"])
        optimizer.build(model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    schedule = LearningRateSchedule(config.learning_rate, config.lr_schedule, config.lr_patience,
                                    config.lr_max_decays, config.lr_boundaries,
                                    total_steps=epochs * steps_per_epoch,
                                    warmup_steps=round(config.lr_warmup_epochs * steps_per_epoch))
    # Keras does not expose the dropout layers' RNG states to tf.train.Checkpoint: add
    # them (the model's non-trainable variables) so a resumed run draws the same masks.
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step, epoch=epoch,
                                     schedule=schedule,
                                     rng=[v.value for v in model.non_trainable_variables])
    manager = tf.train.CheckpointManager(checkpoint, save_dir,
                                         config.keep_checkpoints if chief else 1,
                                         step_counter=step, checkpoint_name="ckpt")
    best = tf.train.CheckpointManager(checkpoint, os.path.join(save_dir, "best"), 1,
                                      step_counter=step, checkpoint_name="ckpt")
    latest = tf.train.latest_checkpoint(config.model_dir)   # every worker resumes from the chief's
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        log(f"Resuming from step {int(step.numpy())} (epoch {int(epoch.numpy())}) of {latest}")
    else:
        log(f"Starting from step 0 in {config.model_dir}")
    if chief:
        for line in runtime_lines(runtime):
            log(line)

    train_step = make_train_step(model, optimizer, config.batch_size, strategy,
                                 runtime["jit_compile"])
    eval_step = make_eval_step(model)
    eval_data = input_pipeline.eval_dataset(source, stats, config.batch_size,
                                            split=config.eval_split, mean_mode=config.mean_mode,
                                            input_scale=config.input_scale,
                                            image_size=config.image_size)
    if chief:
        train_writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "train"))
        val_writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "validation"))
    else:
        train_writer = val_writer = tf.summary.create_noop_writer()
    log(f"{source.name}: {source.num_examples(config.train_split)} training images, "
        f"{num_classes} classes, {steps_per_epoch} steps/epoch, {epochs} epochs"
        f"{epochs_note}, training to step {total_steps}")

    def validate():
        metrics = evaluate(eval_step, eval_data, num_classes)
        with val_writer.as_default(step=int(step.numpy())):
            for name in ("loss", "top1_error", "top5_error"):
                tf.summary.scalar(name, metrics[name])
        log(f"validation at step {int(step.numpy())}: loss {metrics['loss']:.4f} "
            f"top-1 error {metrics['top1_error']:.4f} top-5 error {metrics['top5_error']:.4f} "
            f"({metrics['examples']} images)")
        return metrics

    metrics, validated_at = None, -1
    progress = Progress(config.batch_size, config.log_steps, total_steps, train_writer, log,
                        start_step=int(step.numpy()))
    with _StopRequest() as stop:
        try:
            while int(step.numpy()) < total_steps:
                # One epoch (or its rest, after a restart mid-epoch).
                e = int(epoch.numpy())
                done_in_epoch = int(step.numpy()) - e * steps_per_epoch
                data = distributed_epoch(strategy, source, stats, config, e, done_in_epoch,
                                         steps_per_epoch)
                for batch in data:
                    s = int(step.numpy())
                    if s in config.profile_steps[:1]:
                        tf.profiler.experimental.start(os.path.join(config.model_dir, "train"))
                    optimizer.learning_rate = schedule.learning_rate_at(s)
                    loss, miss1, miss5 = (float(t) for t in train_step(batch))
                    if not math.isfinite(loss):
                        raise NonFiniteLoss(
                            f"the loss became {loss} at step {s + 1}; stopped without saving, the "
                            f"last good checkpoint ({manager.latest_checkpoint}) is intact: lower "
                            "--learning_rate or use --kernel_init=he")
                    step.assign_add(1)
                    s += 1
                    if s in config.profile_steps[1:2]:
                        tf.profiler.experimental.stop()
                    progress.step_done(s, e, loss, miss1, miss5, optimizer, model)
                    if s % config.checkpoint_steps == 0:
                        manager.save(checkpoint_number=s)
                    if stop.signal or s >= total_steps:
                        break
                if stop.signal:
                    path = manager.save(checkpoint_number=int(step.numpy()))
                    log(f"{stop.signal}: saved {path}; run again with the same --model_dir to "
                        "resume")
                    return metrics
                if int(step.numpy()) % steps_per_epoch == 0:     # the epoch is complete
                    epoch.assign_add(1)
                    metrics, validated_at = validate(), int(step.numpy())
                    _end_of_epoch_summaries(model, train_writer, int(step.numpy()),
                                            config.histograms)
                    improved = metrics["top1_error"] < float(schedule.best_error.numpy())
                    if schedule.end_of_epoch(int(epoch.numpy()), metrics["top1_error"]):
                        log(f"learning rate divided by {schedule.factor:g}: now "
                            f"{schedule.learning_rate:g}")
                    manager.save(checkpoint_number=int(step.numpy()))
                    if improved:
                        best.save(checkpoint_number=int(step.numpy()))
        except PEER_ERRORS as error:
            if task == LOCAL_TASK:
                raise
            raise WorkerLost(_peer_lost_message(error, task, config.model_dir)) from None
    if validated_at != int(step.numpy()):
        metrics = validate()
    manager.save(checkpoint_number=int(step.numpy()))
    train_writer.flush()
    val_writer.flush()
    return metrics


class Progress:
    """Sums each step's numbers; every `log_steps` steps writes the train scalars and a line.

    Args:
      batch_size: Global batch size (images per step).
      log_steps: How often to write.
      total_steps: The run's last step (for the ETA; always written).
      writer: The train/ summary writer.
      log: Where the progress line goes.
      start_step: The step this run (or its restart) starts from (for the ETA).
    """

    def __init__(self, batch_size, log_steps, total_steps, writer, log, start_step):
        self.batch_size, self.log_steps, self.total_steps = batch_size, log_steps, total_steps
        self.writer, self.log = writer, log
        self.start_step, self.start = start_step, time.time()
        self._reset()

    def _reset(self):
        self.loss = self.miss1 = self.miss5 = 0.0
        self.steps, self.window_start = 0, time.time()

    def step_done(self, s, e, loss, miss1, miss5, optimizer, model):
        """Adds step `s` (1-based, of 0-based epoch `e`); writes when it is time."""
        self.loss, self.miss1, self.miss5 = self.loss + loss, self.miss1 + miss1, self.miss5 + miss5
        self.steps += 1
        if s % self.log_steps and s != self.total_steps:
            return
        n, images = self.steps, self.steps * self.batch_size
        images_per_second = images / max(time.time() - self.window_start, 1e-9)
        lr = float(optimizer.learning_rate.numpy())
        with self.writer.as_default(step=s):
            tf.summary.scalar("loss", self.loss / n)
            tf.summary.scalar("top1_error", self.miss1 / images)
            tf.summary.scalar("top5_error", self.miss5 / images)
            tf.summary.scalar("learning_rate", lr)
            tf.summary.scalar("images_per_second", images_per_second)
            tf.summary.scalar("weight_norm", weight_norm(model))
        rate = (s - self.start_step) / max(time.time() - self.start, 1e-9)
        self.log(f"epoch {e + 1} step {s}/{self.total_steps} loss {self.loss / n:.4f} "
                 f"top-1 error {self.miss1 / images:.3f} lr {lr:g} "
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
