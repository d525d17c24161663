"""The training loop: a custom tf.function step, the paper's optimiser and schedule.

`train(config)` reads top to bottom as the paper's procedure: `prepare` (where
the run computes, the data and its statistics, the state and the checkpoint it
resumes from), then epochs of steps, each epoch ending in validation,
summaries, the schedule's decision and checkpoints. Runtime choices live in
`runtime`, TensorBoard and the progress line in `summaries`, the state and its
checkpoints in `state`.

Resuming: the state in a checkpoint is the model, the optimiser's velocities,
the step and epoch counters, the schedule's state and the dropout RNG state.
The data order of an epoch follows from (seed, epoch), so a restarted run skips
the batches the epoch had already seen and continues exactly where it stopped.
"""

import contextlib
import dataclasses
import math
import signal

import tensorflow as tf

from alexnet_tf import errors, files, metrics
from alexnet_tf.config import frozen_layers
from alexnet_tf.data import dataset_stats, input_pipeline, sources
from alexnet_tf.training import finetune, ownership, runtime, summaries
from alexnet_tf.training.rundir import Run, RunDir, TRAIN_LOGS
from alexnet_tf.training.state import (RunState, averaged_weights, build_state, restore_state,
                                       resume_point, unfreeze_if_due)


class WorkerLost(RuntimeError):
    """Another worker of a multi-worker job stopped; the message is one line."""


class Stopped(Exception):
    """SIGINT or SIGTERM stopped the run after its checkpoint was saved.

    `exit_status` is the shell's for a process ended by that signal (130, 143), so
    `alexnet-train ... && alexnet-export ...` does not go on with a half-trained run.
    """

    def __init__(self, signum, checkpoint):
        self.signal = signal.Signals(signum).name
        self.exit_status = 128 + int(signum)
        self.checkpoint = checkpoint
        super().__init__(f"{self.signal}: saved {checkpoint}; run again with the same "
                         "--model_dir to resume")


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# --- The step -----------------------------------------------------------------


def make_train_step(model, optimizer, global_batch_size, strategy, jit_compile=False,
                    label_smoothing=0.0, class_weights=None):
    """The tf.function train step over a distributed batch; returns (loss, top-1, top-5 misses).

    `label_smoothing` and `class_weights` change the loss as `metrics.cross_entropy` says.

    Under the default strategy, gradients come from `tf.gradients`, which creates
    each gradient op with the device of its forward op, so tower b's backward
    pass stays on tower b's device (a GradientTape leaves them unplaced). Under
    a data-parallel strategy the towers are unplaced and a GradientTape is used:
    MultiWorkerMirroredStrategy cannot all-reduce `tf.gradients`' outputs
    ("destinations can not be empty").
    """
    variables = model.trainable_variables
    colocate = runtime.is_default_strategy(strategy)

    def replica_step(images, labels, partner_labels=None, lam=None):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = metrics.cross_entropy(labels, logits, global_batch_size, label_smoothing,
                                         class_weights)
            if lam is not None:        # --mixup / --cutmix: the loss mixed as the images
                loss = lam * loss + (1.0 - lam) * metrics.cross_entropy(
                    partner_labels, logits, global_batch_size, label_smoothing, class_weights)
                labels = tf.where(lam >= 0.5, labels, partner_labels)   # the larger share's
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
            shard=(context.num_input_pipelines, context.input_pipeline_id),
            mixup=config.mixup, cutmix=config.cutmix,
            randaugment=((config.randaugment_ops, config.randaugment_magnitude)
                         if config.augment == "randaugment" else None))
    return strategy.distribute_datasets_from_function(dataset_fn)


# What a collective op raises when a peer worker is gone or its collectives timed out.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
               tf.errors.AbortedError, tf.errors.CancelledError)


def _peer_lost_message(error, task, run_dir):
    latest = run_dir.latest_checkpoint()
    return (f"{task}: another worker stopped responding ({errors.first_line(error, 200)}); "
            f"restart every worker with the same flags to resume from the last checkpoint "
            f"({latest or 'none yet'})")


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
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# --- The run ------------------------------------------------------------------


@dataclasses.dataclass
class _Prepared:
    """Everything the loop needs, made by `prepare`."""
    config: object          # the recipe's settings for the chosen precision
    resolved: runtime.Resolved
    source: object
    normalization: dataset_stats.Normalization
    steps_per_epoch: int
    last_step: int
    run_dir: RunDir
    state: RunState
    class_weights: object = None     # float32 [classes] with --class_weights=balanced


def prepare(recipe, strategy, log=print):
    """The run before its first step: where it computes, data, statistics, state, restore."""
    recipe.validate()
    # Fine-tuning: the source's network options and (by default) its preprocessing.
    init = finetune.Source.locate(recipe.init_from) if recipe.init_from else None
    if init:
        recipe = finetune.with_source_settings(recipe, init, log)
    resolved = runtime.resolve(recipe, strategy)
    config = resolved.config

    # Data: source, training-set statistics (computed once, stored beside the data).
    source = sources.open_source(config.dataset, config.data_dir, config.max_megapixels)
    stats = (init.run_dir.stats() if init and config.source_stats else
             dataset_stats.stats_for(source, config.train_split))
    images = source.num_examples(config.train_split)
    steps_per_epoch = images // config.batch_size
    if steps_per_epoch == 0:
        raise sources.DataError(
            f"--batch_size={config.batch_size} is larger than the {config.train_split} split "
            f"({images} images); use a smaller batch")
    total_steps = config.epochs * steps_per_epoch
    last_step = min(total_steps, config.max_steps or total_steps)
    resolved.runtime.update(steps_per_epoch=steps_per_epoch, last_step=last_step)
    run_dir = RunDir(config.model_dir)
    if resolved.chief:           # a resume that changes the recipe stops here, nothing written
        accepted = ownership.check_recipe(run_dir, recipe)
        run_dir.write(Run(recipe, source.class_names, resolved.runtime), stats)

    # Model, optimiser, schedule and the checkpoint they resume from.
    task = None if resolved.chief else resolved.task
    latest = resume_point(run_dir, task, log)
    state = build_state(config, strategy, len(source.class_names), resolved.devices,
                        resolved.precision, total_steps, steps_per_epoch,
                        initialize=latest is None)
    restore_state(state, run_dir, config.keep_checkpoints if resolved.chief else 1, task, log,
                  latest)
    if resolved.chief:
        ownership.record_start(run_dir, recipe, int(state.step.numpy()), accepted)
        for change in accepted:
            log(f"Accepted change (--allow_changes): {change}")
    if init and int(state.step.numpy()) == 0:
        finetune.load_matching(state.model, init, log)
    frozen = frozen_layers(config.train_layers, config.freeze)
    if frozen:
        until = f" until epoch {config.unfreeze_at}" if config.unfreeze_at else ""
        log(f"Frozen (not trained{until}): {', '.join(frozen)}")
    if resolved.chief:
        for line in runtime.runtime_lines(resolved.runtime):
            log(line)
        summaries.write_hparams(run_dir, recipe, resolved.runtime, source.class_names)
    epochs_note = (f" (the --epochs entry for {resolved.precision})"
                   if config.epochs != recipe.epochs else "")
    log(f"{source.name}: {images} training images, {len(source.class_names)} classes, "
        f"{steps_per_epoch} steps/epoch, {config.epochs} epochs{epochs_note}, training to step "
        f"{last_step}")
    class_weights = None
    if config.class_weights == "balanced":
        counts = sources.class_counts(source, config.train_split)
        class_weights = metrics.balanced_class_weights(counts)
        shown = sorted(zip(class_weights, source.class_names, counts))
        shown = shown if len(shown) <= 12 else [shown[0], shown[-1]]      # the extremes of many
        log("Class weights (balanced, from the training split's counts): " + ", ".join(
            f"{name} {weight:.3g} ({count} images)" for weight, name, count in shown))
    return _Prepared(config, resolved, source, dataset_stats.Normalization.of(config, stats),
                     steps_per_epoch, last_step, run_dir, state, class_weights)


def train(config, strategy=None, log=print):
    """Trains (or resumes training) AlexNet as `config` says; returns the final validation metrics.

    The chief holds the run directory's writer lock for the whole run (`ownership.hold`).
    """
    strategy = strategy or tf.distribute.get_strategy()
    chief, _ = runtime.task_of(strategy)
    created = files.missing_folders(config.model_dir) if config.model_dir else []
    try:
        with ownership.hold(config.model_dir, log) if chief else contextlib.nullcontext():
            return _train(config, strategy, log)
    except BaseException:
        files.remove_if_empty(created)     # a refused start leaves no folder it made
        raise


def _train(config, strategy, log):
    run = prepare(config, strategy, log)
    config, state, source, normalization = run.config, run.state, run.source, run.normalization
    steps_per_epoch, last_step = run.steps_per_epoch, run.last_step
    def new_train_step():         # of the layers that train now
        return make_train_step(state.model, state.optimizer, config.batch_size, strategy,
                               run.resolved.runtime["jit_compile"], config.label_smoothing,
                               run.class_weights)

    train_step = new_train_step()
    eval_step = make_eval_step(state.model)
    eval_data = input_pipeline.eval_dataset(source, normalization, config.batch_size,
                                            split=config.eval_split, image_size=config.image_size)
    writers = summaries.Writers(run.run_dir, run.resolved.chief)

    def validate():
        with averaged_weights(state.optimizer) as averaged:       # --ema: the averages
            return _validate(eval_step, eval_data, writers.validation, int(state.step.numpy()),
                             log, source.class_names, averaged)

    metrics_, validated_at = None, -1
    progress = summaries.Progress(config.batch_size, config.log_steps, last_step, writers.train,
                                  log, start_step=int(state.step.numpy()))
    with _StopRequest() as stop:
        try:
            while int(state.step.numpy()) < last_step:
                # One epoch (or its rest, after a restart mid-epoch).
                e, before = int(state.epoch.numpy()), int(state.step.numpy())
                if unfreeze_if_due(state.model, config, e):
                    log(f"epoch {e + 1}: every layer trains from now on (--unfreeze_at="
                        f"{config.unfreeze_at})")
                    train_step = new_train_step()
                # Within [0, steps_per_epoch]: a resume with an allowed batch size change moves
                # the epochs' boundaries (its position can no longer be exact, but it goes on).
                done_in_epoch = min(max(before - e * steps_per_epoch, 0), steps_per_epoch)
                for batch in distributed_epoch(strategy, source, normalization, config, e,
                                               done_in_epoch, steps_per_epoch):
                    s, results = _one_step(train_step, batch, state, config, run.run_dir)
                    if progress.step_done(s, *results):
                        progress.report(s, e, state.schedule.current, weight_norm(state.model))
                    if s % config.checkpoint_steps == 0:
                        state.save()
                    if stop.signal or s >= last_step:
                        break
                if stop.signal:
                    stopped = Stopped(stop.signal, state.save())
                    log(str(stopped))
                    writers.flush()
                    raise stopped
                done = int(state.step.numpy()) - e * steps_per_epoch
                if done < steps_per_epoch and int(state.step.numpy()) == before:
                    raise sources.DataError(f"epoch {e + 1} of {source.name} gave no batch; "
                                            "check the training split")
                if done >= steps_per_epoch:                             # the epoch is complete
                    metrics_ = _end_of_epoch(state, validate, writers.train, config, log)
                    validated_at = int(state.step.numpy())
        except PEER_ERRORS as error:
            if run.resolved.task == runtime.LOCAL_TASK:
                raise
            raise WorkerLost(_peer_lost_message(error, run.resolved.task, run.run_dir)) from None
    if validated_at != int(state.step.numpy()):     # a run cut short by --max_steps
        metrics_ = validate()
        summaries.epoch_summaries(state.model, writers.train, int(state.step.numpy()),
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
    summaries.epoch_summaries(state.model, train_writer, step, config.histograms)
    improved = results["top1_error"] < float(state.schedule.best_error.numpy())
    if state.schedule.end_of_epoch(int(state.epoch.numpy()), results["top1_error"]):
        log(f"learning rate divided by {state.schedule.factor:g}: now "
            f"{state.schedule.learning_rate:g}")
    state.save(best=improved)
    return results


def _validate(eval_step, eval_data, writer, step, log, class_names, averaged=False):
    results = metrics.dataset_metrics(eval_step, eval_data)
    summaries.validation_summaries(writer, step, results, class_names)
    log(f"validation at step {step}: loss {results['loss']:.4f} "
        f"top-1 error {results['top1_error']:.4f} top-5 error {results['top5_error']:.4f} "
        f"({results['examples']} images{', the averaged weights' if averaged else ''})")
    return results
