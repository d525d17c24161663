"""Re-running the paper's claims: the baseline and each ablation under one recipe, side by side.

`run_study(out_dir, preset, seeds)` trains every (ablation, seed) into
`OUT/runs/<name>_seed<k>/`, evaluates it (centre crop, 10-crop, training
error, the step and time at which its training error first reached the
figure-1 threshold, parameters, images/s, conv1's chromatic energy per tower)
and writes `OUT/results.json` (one row per run), `OUT/results.md` (the table,
with the paper's numbers beside ours) and `OUT/figure1.png` (training error
against epochs). A run whose results are recorded is skipped; an unfinished
one resumes from its checkpoint, so a stopped study is continued by the same
command.

Example:

    rows = run_study("study", "smoke", seeds=(0,), data_dir="/tmp/tfds")
"""

import dataclasses
import json
import multiprocessing
import os
import signal
import statistics
import sys
import time

import tensorflow as tf

from alexnet_tf import errors, figures, files, hardware, metrics, paper, quiet
from alexnet_tf.analysis import evaluate
from alexnet_tf.config import ModelConfig, TrainConfig
from alexnet_tf.data import sources
from alexnet_tf.training import rundir, runtime, train
from alexnet_tf.training.restore import restore_model
from alexnet_tf.training.summaries import format_duration


@dataclasses.dataclass(frozen=True)
class Ablation:
    """One run of the study: what changes from the baseline, and what the paper says of it."""
    name: str
    changed: str
    settings: tuple = ()          # TrainConfig changes: ((name, value), ...)
    model: tuple = ()             # ModelConfig changes
    section: str = ""
    paper: str = ""
    paper_delta: tuple = None     # (top-1, top-5) points the ablation is worse by, in the paper
    inverted: bool = False        # this run has the paper's choice, and the baseline lacks it


ABLATIONS = (
    Ablation("baseline", "none: two towers, ReLU, LRN, 3/2 pooling, dropout 0.5, PCA"),
    Ablation("tanh", "tanh instead of ReLU", model=(("activation", "tanh"),), section="3.1",
             paper="ReLU reaches 25% training error 6x faster than tanh (figure 1: CIFAR-10, "
             "a 4-layer CNN)"),
    Ablation("no_lrn", "no local response normalisation", model=(("lrn", False),),
             section="3.3", paper="LRN lowers top-1 by 1.4%, top-5 by 1.2%",
             paper_delta=(1.4, 1.2)),
    Ablation("pool_2x2", "2/2 pooling instead of 3/2", model=(("pool_size", 2), ("pool_stride", 2)),
             section="3.4", paper="overlapping pooling lowers top-1 by 0.4%, top-5 by 0.3%",
             paper_delta=(0.4, 0.3)),
    Ablation("one_gpu", "the paper's one-GPU net: one tower, conv1-4 half width",
             model=(("towers", 1), ("half_width", True)), section="3.2",
             paper="two GPUs lower top-1 by 1.7%, top-5 by 1.2% against it",
             paper_delta=(1.7, 1.2)),
    Ablation("one_tower_full", "one full-width tower (not the paper's comparator)",
             model=(("towers", 1),), section="3.2", paper="(not in the paper)"),
    Ablation("no_dropout", "no dropout", model=(("dropout_rate", 0.0),), section="4.2",
             paper="without dropout, substantial overfitting; with it, about twice the "
             "iterations to converge"),
    Ablation("no_pca", "no PCA colour augmentation", settings=(("pca", False),), section="4.1",
             paper="PCA colour augmentation lowers top-1 by over 1%", paper_delta=(1.0, None)),
    Ablation("no_conv3", "conv3 removed", model=(("remove", ("conv3",)),), section="1",
             paper="removing any middle conv layer costs about 2% top-1", paper_delta=(2.0, None)),
    Ablation("no_conv4", "conv4 removed", model=(("remove", ("conv4",)),), section="1",
             paper="removing any middle conv layer costs about 2% top-1", paper_delta=(2.0, None)),
    Ablation("no_conv5", "conv5 removed", model=(("remove", ("conv5",)),), section="1",
             paper="removing any middle conv layer costs about 2% top-1", paper_delta=(2.0, None)),
)
NAMES = tuple(a.name for a in ABLATIONS)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A study's recipe: the baseline's TrainConfig and how much to evaluate."""
    name: str
    config: TrainConfig
    ten_crop_images: int = None   # None: the whole evaluation split
    train_error_images: int = None
    threshold: float = 0.25       # figure 1's training error
    # Each run in its own process, which returns all its memory when it ends (a process that
    # builds many models keeps some of each). smoke: one process, 6 s a run faster.
    own_process: bool = True
    # ((ablation name, Ablation), ...): rows of this preset that replace ABLATIONS' ones.
    replace: tuple = ()

    def ablations(self):
        """ABLATIONS as this preset runs them (baseline first)."""
        mine = dict(self.replace)
        return tuple(mine.get(a.name, a) for a in ABLATIONS)


_QUICK = dict(kernel_init="he", bias_init="zeros")
PRESETS = {
    # A few steps each on the tiny built-in dataset: for the test suite.
    "smoke": Preset("smoke", TrainConfig(
        model_dir="", dataset="alexnet_shapes/tiny", batch_size=8, epochs=1, max_steps=1,
        input_scale="std", learning_rate=0.001, mixed_precision="float32", jit_compile="false",
        log_steps=1, checkpoint_steps=1000, model=ModelConfig(devices="none", **_QUICK)),
        ten_crop_images=8, train_error_images=16, threshold=0.9, own_process=False),
    # The built-in dataset, every ablation once, within 90 minutes on a 2-core CPU: the quick
    # start's recipe (He init, unit-scaled input, cosine, no dropout). With the paper's dropout
    # the baseline is at ~70% error after 2 epochs, too far from trained for the other
    # differences to mean anything (docs/RESULTS.md), so dropout is the row that adds it.
    "cpu": Preset("cpu", TrainConfig(
        model_dir="", dataset="alexnet_shapes", batch_size=64, epochs=4, input_scale="std",
        learning_rate=0.004, lr_schedule="cosine", lr_warmup_epochs=0.5, log_steps=10,
        by_precision=(("float32", "batch_size", 16), ("float32", "learning_rate", 0.005),
                      ("float32", "epochs", 2)),
        model=ModelConfig(dropout_rate=0.0, **_QUICK)), ten_crop_images=200,
        train_error_images=600, threshold=0.5, replace=(
            ("baseline", Ablation("baseline", "none: two towers, ReLU, LRN, 3/2 pooling, PCA; "
                                  "no dropout (the cpu preset's baseline)")),
            ("no_dropout", dataclasses.replace(
                ABLATIONS[NAMES.index("no_dropout")], name="dropout",
                changed="the paper's dropout 0.5 (the baseline has none)",
                model=(("dropout_rate", paper.DROPOUT_RATE),), inverted=True)))),
    # The paper's recipe on ImageNet (flags/paper.cfg): for GPUs.
    "paper": Preset("paper", TrainConfig(model_dir="", dataset="imagenet2012")),
}


class StudyError(errors.UserError):
    """A study that cannot go on as asked; the message is one line."""


def replaced_rows():
    """How the presets' rows differ from ABLATIONS', in words (for --only's help)."""
    return "; ".join(f"the {p.name} preset runs '{new.name}' in place of '{old}'"
                     for p in PRESETS.values() for old, new in p.replace if new.name != old)


def run_config(preset, ablation, seed, out_dir, data_dir=None):
    """The TrainConfig of one (ablation, seed) run."""
    base = preset.config
    model = dataclasses.replace(base.model, **dict(ablation.model))
    changes = dict(ablation.settings, model=model, seed=seed,
                   model_dir=os.path.join(out_dir, "runs", f"{ablation.name}_seed{seed}"))
    if data_dir is not None:
        changes["data_dir"] = data_dir
    return dataclasses.replace(base, **changes)


RESULT = "study_result.json"


def run_study(out_dir, preset="cpu", seeds=(0,), only=None, data_dir=None, threshold=None,
              log=print):
    """Trains and evaluates the study's runs (skipping recorded ones); returns the rows."""
    if preset not in PRESETS:
        raise StudyError(f"--preset must be one of {', '.join(PRESETS)}; got {preset!r}")
    preset = PRESETS[preset]
    threshold = preset.threshold if threshold is None else threshold
    ablations = preset.ablations()
    names = [a.name for a in ablations]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise StudyError(f"--only: no ablation {', '.join(unknown)}; the {preset.name} study has "
                         f"{', '.join(names)}")
    _check_same_study(out_dir, preset, threshold)
    chosen = [a for a in ablations if not only or a.name in only]
    plan = [(a, s) for a in chosen for s in seeds]
    rows, durations = [], []
    for i, (ablation, seed) in enumerate(plan, 1):
        config = run_config(preset, ablation, seed, out_dir, data_dir)
        done = files.read_json(os.path.join(config.model_dir, RESULT))
        tag = f"[{i}/{len(plan)}] {ablation.name} seed {seed}"
        if done is not None:
            log(f"{tag}: recorded, skipped")
            rows.append(done)
            continue
        remaining = len(plan) - i + 1
        eta = (f"; study ETA {format_duration(statistics.mean(durations) * remaining)}"
               if durations else "")
        log(f"{tag}: {ablation.changed}{eta}")
        start = time.time()
        if preset.own_process:
            row = _in_own_process(config, ablation, preset, threshold)
        else:
            try:
                row = _record(config, ablation, preset, threshold, log)
            except train.Stopped:
                raise StudyError(f"run {ablation.name} seed {seed} was stopped; run the same "
                                 "command again to resume it") from None
        rows.append(row)
        durations.append(time.time() - start)
        log(f"{tag}: done in {format_duration(durations[-1])}: top-1 error {row['top1_error']:.4f}, "
            f"10-crop {row['top1_error_10crop']:.4f}, training error {row['train_error']:.4f}")
        write_outputs(out_dir, rows, threshold)
    rows += _ensemble_rows(out_dir, preset, seeds, chosen, data_dir)
    write_outputs(out_dir, rows, threshold)
    trained = len(durations)
    log(f"study: {trained} run(s) trained, {len(plan) - trained} recorded before; "
        f"{os.path.join(out_dir, 'results.md')}")
    return rows


def _check_same_study(out_dir, preset, threshold):
    """Refuses an out_dir whose runs were trained under another preset, threshold or recipe
    (the preset's TrainConfig, which a newer alexnet_tf may have changed); records them."""
    path = os.path.join(out_dir, "study.json")
    recorded = files.read_json(path)
    wanted = json.loads(json.dumps({"preset": preset.name, "threshold": threshold,
                                    "recipe": preset.config.to_dict()}))
    if recorded is not None and recorded != wanted:
        differ = ", ".join(k for k in wanted if recorded.get(k) != wanted[k])
        raise StudyError(f"{out_dir} holds a study with other settings (different {differ}); "
                         "pass another --out_dir, or the same --preset and --threshold with the "
                         "alexnet_tf that started it")
    files.atomic_write_json(path, wanted)


def _in_own_process(config, ablation, preset, threshold):
    """Trains and evaluates one run in a fresh process (whose memory is all returned when it
    ends: a process that builds many models keeps some of each); returns its recorded row."""
    process = multiprocessing.get_context("spawn").Process(
        target=_child, args=(config, ablation, preset, threshold))
    with quiet.terminal_stderr():         # the child's own errors reach the terminal
        process.start()
    while True:                    # Ctrl-C (once or more) reached the child too:
        try:                       # let it save its checkpoint and end
            process.join()
            break
        except KeyboardInterrupt:
            continue
    row = files.read_json(os.path.join(config.model_dir, RESULT))
    if process.exitcode != 0 or row is None:
        what = ("was stopped" if process.exitcode in STOPPED else
                f"failed (exit status {process.exitcode}; its error is above)")
        raise StudyError(f"run {ablation.name} seed {config.seed} {what}; run the same command "
                         "again to resume it")
    return row


# A run's process stopped by SIGINT/SIGTERM: its exit status (train.Stopped), or the signal's.
STOPPED = (128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM)


def _record(config, ablation, preset, threshold, log):
    """Trains and evaluates one run and writes its RESULT; its row (`train.Stopped` if stopped)."""
    row = _train_and_evaluate(config, ablation, preset, threshold, log)
    files.atomic_write_json(os.path.join(config.model_dir, RESULT), row)
    return row


def _child(config, ablation, preset, threshold):
    """The process of one run (`_in_own_process`): exits 1 on a UserError, STOPPED if stopped."""
    hardware.keep_freed_memory()   # this process trains one run, as alexnet-train's does

    def log(line):
        print(line, flush=True)
    try:
        _record(config, ablation, preset, threshold, log)
    except errors.UserError as error:
        print(f"alexnet-study: error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    except train.Stopped as stopped:
        sys.exit(stopped.exit_status)


def _train_and_evaluate(config, ablation, preset, threshold, log):
    """The run's row; `train.Stopped` when SIGINT/SIGTERM stopped its training."""
    final = train.train(config, log=lambda line: log(f"    {line}"))
    run_dir = rundir.RunDir(config.model_dir)
    run = run_dir.read()
    # Evaluated in the precision it trained in; XLA as asked, or where inference is faster with it.
    inference = runtime.resolve_inference(config.mixed_precision, config.jit_compile)
    model, run, _ = restore_model(run_dir, "best", precision=inference["mixed_precision"])
    source = sources.open_source(config.dataset, config.data_dir)
    jit = inference["jit_compile"]
    ten = metrics.error_rates(*evaluate.run_probabilities(
        model, run_dir, run, source, config.eval_split, ten_crop=True, batch_size=8,
        max_images=preset.ten_crop_images, jit_compile=jit))
    centre = metrics.error_rates(*evaluate.run_probabilities(    # the model the 10-crop used
        model, run_dir, run, source, config.eval_split, max_images=preset.ten_crop_images,
        jit_compile=jit))
    on_train = metrics.error_rates(*evaluate.run_probabilities(
        model, run_dir, run, source, config.train_split, max_images=preset.train_error_images,
        jit_compile=jit))
    curve = training_curve(run_dir, run.runtime.get("steps_per_epoch") or 1)
    reached = next(((step, seconds) for step, _, error, seconds in curve if error <= threshold),
                   (None, None))
    kernels = figures.conv1_kernels(model)
    speeds = [images for _, _, images in _scalars(run_dir, "images_per_second")]
    return {
        "name": ablation.name, "seed": config.seed, "changed": ablation.changed,
        "section": ablation.section, "paper": ablation.paper, "inverted": ablation.inverted,
        "top1_error": final["top1_error"], "top5_error": final["top5_error"],
        "top1_error_10crop": ten["top1_error"], "top5_error_10crop": ten["top5_error"],
        "ten_crop_images": ten["examples"], "train_error": on_train["top1_error"],
        # The centre crop over the 10-crop's images, which the 10-crop claim compares with.
        "top1_error_centre_same": centre["top1_error"],
        "top5_error_centre_same": centre["top5_error"],
        "steps": int(curve[-1][0]) if curve else 0, "epochs": run.runtime.get("epochs"),
        "threshold": threshold, "steps_to_threshold": reached[0],
        "seconds_to_threshold": reached[1], "params": int(model.count_params()),
        "images_per_second": statistics.median(speeds) if speeds else None,
        "chromatic_tower_a": figures.chromatic_fraction(kernels[0]),
        "chromatic_tower_b": figures.chromatic_fraction(kernels[1]) if len(kernels) > 1 else None,
        "curve": [[step, epoch, error] for step, epoch, error, _ in curve],
    }


def _scalars(run_dir, tag):
    """[(step, wall time, value)] of a train/ scalar that the run logged, in step order."""
    from tensorboard.backend.event_processing import event_accumulator
    accumulator = event_accumulator.EventAccumulator(
        run_dir.logs(rundir.TRAIN_LOGS), size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    if tag not in accumulator.Tags().get("tensors", []):
        return []
    return [(e.step, e.wall_time, float(tf.make_ndarray(e.tensor_proto)))
            for e in accumulator.Tensors(tag)]


def training_curve(run_dir, steps_per_epoch):
    """[(step, epoch, training top-1 error, seconds since the first point)] from train/.

    Each point is the mean over the `--log_steps` steps before it (augmented
    images, dropout on), as the progress lines report it.
    """
    points = _scalars(run_dir, "top1_error")
    start = points[0][1] if points else 0.0
    return [(step, step / steps_per_epoch, value, wall - start) for step, wall, value in points]


def _ensemble_rows(out_dir, preset, seeds, chosen, data_dir):
    if len(seeds) < 2 or "baseline" not in [a.name for a in chosen]:
        return []
    baseline = preset.ablations()[0]
    dirs = [run_config(preset, baseline, s, out_dir, data_dir).model_dir for s in seeds]
    _, centre = evaluate.evaluate_runs(dirs)
    _, ten = evaluate.evaluate_runs(dirs, ten_crop=True, max_images=preset.ten_crop_images,
                                    batch_size=8)
    return [{"name": "baseline_ensemble", "seed": None,
             "changed": f"{len(seeds)} baseline nets, mean softmax", "section": "6",
             "paper": "5 CNNs 38.1% against 1 CNN 40.7% top-1 (ILSVRC-2012 validation)",
             "top1_error": centre[-1]["top1_error"], "top5_error": centre[-1]["top5_error"],
             "top1_error_10crop": ten[-1]["top1_error"],
             "top5_error_10crop": ten[-1]["top5_error"], "ten_crop_images": ten[-1]["examples"]}]


# --- Outputs ----------------------------------------------------------------------------------


def write_outputs(out_dir, rows, threshold):
    """results.json, results.md and figure1.png from the rows so far."""
    files.atomic_write_json(os.path.join(out_dir, "results.json"), rows)
    files.atomic_write(os.path.join(out_dir, "results.md"), results_markdown(rows).encode())
    curves = {f"{r['name']} (seed {r['seed']})": [(epoch, error) for _, epoch, error in r["curve"]]
              for r in rows if r.get("curve")}
    if curves:
        figures.write_png(os.path.join(out_dir, "figure1.png"),
                          figures.curves_image(curves, threshold, highlight=("baseline", "tanh")))


def _pct(value):
    return "" if value is None else f"{100 * value:.1f}"


def results_markdown(rows):
    """The study's table (errors in %), then each claim: our difference beside the paper's."""
    lines = ["| run | seed | what changed | top-1 | top-5 | 10-crop top-1 | 10-crop top-5 | "
             "training error | steps to threshold | parameters | images/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        speed = r.get("images_per_second")
        lines.append(
            f"| {r['name']} | {'' if r['seed'] is None else r['seed']} | {r['changed']} | "
            f"{_pct(r['top1_error'])} | {_pct(r['top5_error'])} | "
            f"{_pct(r['top1_error_10crop'])} | {_pct(r['top5_error_10crop'])} | "
            f"{_pct(r.get('train_error'))} | {r.get('steps_to_threshold') or '-'} | "
            f"{r.get('params', '') or ''} | {'' if speed is None else f'{speed:.1f}'} |")
    lines += ["", "| claim (section) | the paper | ours: top-1 / top-5 difference from the "
              "baseline (points; + = worse without the paper's choice) |", "|---|---|---|"]
    mean = _means(rows)
    base = mean.get("baseline")
    claims = {}                                   # name -> its first row, in the rows' order
    for r in rows:
        if base is not None and r["name"] not in ("baseline", "baseline_ensemble"):
            claims.setdefault(r["name"], r)
    for name, r in claims.items():
        ours = mean[name]
        if name == "tanh":
            text = _slower("tanh", ours, "ReLU", base)
        elif name in ("no_dropout", "dropout"):
            with_, without = (ours, base) if r.get("inverted") else (base, ours)
            text = (f"training error {_pct(without['train_error'])} without dropout, "
                    f"{_pct(with_['train_error'])} with; validation top-1 "
                    f"{_pct(without['top1_error'])} without, {_pct(with_['top1_error'])} with; "
                    + _slower("dropout", with_, "no dropout", without))
        else:
            sign = -1 if r.get("inverted") else 1
            text = (f"{100 * sign * (ours['top1_error'] - base['top1_error']):+.1f} / "
                    f"{100 * sign * (ours['top5_error'] - base['top5_error']):+.1f}")
        lines.append(f"| {r['changed']} ({r['section']}) | {r['paper']} | {text} |")
    if base is not None and base["top1_error_centre_same"] is not None:
        lines.append(f"| 10-crop against centre crop (4.1) | (the paper's table 1 uses 10 crops) | "
                     f"{100 * (base['top1_error_10crop'] - base['top1_error_centre_same']):+.1f}"
                     f" / {100 * (base['top5_error_10crop'] - base['top5_error_centre_same']):+.1f}"
                     f" (the same {base['ten_crop_images']:.0f} images) |")
    if "baseline_ensemble" in mean and base is not None:
        ens = mean["baseline_ensemble"]
        lines.append(f"| an ensemble of the baseline's seeds (6) | 5 CNNs 38.1% against 1 CNN "
                     f"40.7% top-1 | {_pct(ens['top1_error'])} against "
                     f"{_pct(base['top1_error'])} (mean of one net) |")
    return "\n".join(lines) + "\n"


def _slower(slow_name, slow, fast_name, fast):
    """How many times the steps of `fast` `slow` took to figure 1's threshold, in words."""
    slow_steps, fast_steps = slow["steps_to_threshold"], fast["steps_to_threshold"]
    if not fast_steps:
        return f"{fast_name} did not reach the threshold in {fast['steps']} steps"
    if not slow_steps:
        return (f"{slow_name} did not reach the threshold in {slow['steps']} steps, over "
                f"{slow['steps'] / fast_steps:.1f}x the {fast_steps} of {fast_name}")
    return (f"{slow_name} took {slow_steps / fast_steps:.1f}x the steps of {fast_name} to the "
            f"threshold ({slow_steps} against {fast_steps})")


def _means(rows):
    """Per run name, the mean over seeds of each number (None where a seed has none)."""
    by_name = {}
    for r in rows:
        by_name.setdefault(r["name"], []).append(r)
    means = {}
    for name, group in by_name.items():
        means[name] = {}
        for key in ("top1_error", "top5_error", "top1_error_10crop", "top5_error_10crop",
                    "train_error", "steps_to_threshold", "steps", "top1_error_centre_same",
                    "top5_error_centre_same", "ten_crop_images"):
            values = [g.get(key) for g in group]
            means[name][key] = None if any(v is None for v in values) else \
                statistics.mean(values)
    return means

