"""alexnet-benchmark: training, pipeline and evaluation speed on this machine; table + JSON."""

import json
import os
import platform

import tensorflow as tf
from absl import app, flags

from alexnet_tf import files, hardware
from alexnet_tf.analysis import benchmark
from alexnet_tf.cli import common
from alexnet_tf.data import dataset_stats, input_pipeline, sources
from alexnet_tf.training import runtime

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "alexnet_shapes", "Dataset for the pipeline measurements.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
flags.DEFINE_integer("batch_size", 128, "Training batch (the paper's 128).")
flags.DEFINE_boolean("quick", False, "Fewer steps and repeats (same keys), for a quick look.")
flags.DEFINE_string("json", None, "Write the results to this JSON file.")


flags.DEFINE_boolean("only_weights_load", False, "Measure only AlexNet(weights='bvlc_alexnet') "
                     "from a warm Keras cache (fresh processes; nothing is downloaded).")
flags.DEFINE_string("serving_model_dir", None, "A trained run: add the serving table, its "
                    "checkpoint as each form a server runs (SavedModel per precision, LiteRT per "
                    "quantization, ONNX), each served in a fresh process: batch-1 p50/p99, "
                    "batch-32 images/s, size, peak RSS, top-1 agreement with float32 on its "
                    "validation images.")
flags.DEFINE_boolean("only_serving", False, "With --serving_model_dir: measure only the serving "
                     "table.")
flags.DEFINE_string("reference_json", None,
                    "JSON of docs/torch_reference/alexnet_torch.py run in the same session at the "
                    "same batch: adds its rate and the ratio to ours.")
common.path_flags(data_dir=common.OUT_DIR, json=common.OUT_FILE, serving_model_dir=common.IN_DIR,
                  reference_json=common.IN_FILE)


def weights_load_results(quick):
    load = benchmark.weights_load(repeats=1 if quick else 3)
    return {f"weights_load_{key}": value for key, value in load.items()}


def serving_results(quick):
    """The serving table's rows (benchmark.serving_table) of --serving_model_dir."""
    import tempfile

    from alexnet_tf.serving import deploy, export
    from alexnet_tf.training.rundir import RunDir
    for fmt in (deploy.LITERT, deploy.ONNX):
        deploy.require(fmt)
    native = hardware.native_bfloat16(hardware.detected())
    precisions = ("float32", "bfloat16") if native else ("float32",)
    if not native:
        print("serving table: no bfloat16 SavedModel (this CPU has no native bfloat16: it would "
              "be emulated, several times slower than float32)")
    run_dir = RunDir(FLAGS.serving_model_dir)
    run = run_dir.read()
    images, _ = export.client_images(run_dir, run, run.config.eval_split, 100 if quick else 600)
    with tempfile.TemporaryDirectory() as folder:
        forms = benchmark.serving_files(FLAGS.serving_model_dir, folder, precisions,
                                        deploy.QUANTIZATIONS,
                                        log=lambda line: print(line, flush=True))
        rows = benchmark.serving_table(forms, images, requests=30 if quick else 100)
    for line in benchmark.serving_table_lines(rows):
        print(line)
    return {"serving_table": rows, "serving_table_images": len(images)}


def measure(quick):
    """Every measurement, as one flat dict of numbers (keys documented in docs/BENCHMARKS.md)."""
    if FLAGS.only_weights_load:
        return weights_load_results(quick)
    if FLAGS.only_serving:
        if not FLAGS.serving_model_dir:
            raise app.UsageError("--only_serving needs --serving_model_dir=RUN (a trained run)")
        return serving_results(quick)
    steps = 1 if quick else 4
    batch = FLAGS.batch_size
    found = hardware.detected()
    native_bf16 = hardware.native_bfloat16(found)
    source = sources.open_source(FLAGS.dataset, FLAGS.data_dir)
    num_classes = len(source.class_names)
    normalization = dataset_stats.Normalization(dataset_stats.stats_for(source))
    results = {"batch_size": batch}
    sizes = (1024,) if quick else benchmark.MATMUL_SIZES
    fp32_probes = benchmark.best_matmul_gflops("float32", sizes)
    results.update({f"matmul_fp32_{k}_gflops": v for k, v in fp32_probes.items() if k != "best"})
    results["matmul_fp32_gflops"] = fp32_probes["best"]
    # AMX reaches its bfloat16 rate only on large products (1024: 654 GFLOP/s, 4096: 1,215):
    # with native bfloat16 the probe is 4096 even for --quick; emulated, it would take minutes.
    bf16_sizes = (4096,) if native_bf16 else sizes
    results["matmul_bf16_gflops"] = benchmark.best_matmul_gflops("bfloat16", bf16_sizes)["best"]
    results["pipeline_img_s"] = benchmark.pipeline_rate(source, normalization, batch,
                                                        batches=5 if quick else 20)
    retraces = 0

    def train_rate(precision, jit=False, pipeline=None):
        nonlocal retraces
        # Emulated bfloat16 (no native support) runs ~10x slower than float32: one timed step.
        # --quick times each step once (after the untimed first call that traces it).
        slow = precision == hardware.BFLOAT16 and not native_bf16
        rate, traces, *fed = benchmark.train_step_rate(
            batch, precision, jit_compile=jit, steps=1 if slow else steps,
            num_classes=num_classes, repeats=1 if slow or quick else 3, pipeline=pipeline)
        retraces += traces - 1
        return (rate, *fed) if pipeline is not None else rate

    auto_precision = hardware.choose_precision(found)[0]
    fp32_jit = hardware.choose_jit(found, hardware.FLOAT32)[0]
    # The step `auto` runs in float32 is also timed fed by the real pipeline (the same trace).
    auto_key, other_key = (("train_fp32_jit_synthetic_img_s", "train_fp32_synthetic_img_s")
                           if fp32_jit else
                           ("train_fp32_synthetic_img_s", "train_fp32_jit_synthetic_img_s"))
    results[auto_key], results["train_fp32_pipeline_img_s"] = train_rate(
        "float32", jit=fp32_jit,
        pipeline=input_pipeline.train_dataset(source, normalization, batch))
    results[other_key] = train_rate("float32", jit=not fp32_jit)
    results["train_bf16_synthetic_img_s"] = train_rate("bfloat16")
    results["train_bf16_jit_synthetic_img_s"] = train_rate("bfloat16", jit=True)
    # float16 has no fast path on CPUs (7.5 images/s on the AVX-512 CPU, 2026-11-22): GPUs only.
    gpu = bool(tf.config.list_physical_devices("GPU"))
    results["train_fp16_synthetic_img_s"] = train_rate("float16") if gpu else None
    results["retraces"] = retraces
    conv_bound, conv_gflops = benchmark.conv_bound_rate(batch, jit_compile=fp32_jit,
                                                        repeats=1 if quick else 3,
                                                        num_classes=num_classes)
    results.update(conv_fp32_gflops=conv_gflops, train_fp32_conv_bound_img_s=conv_bound)
    if native_bf16:        # emulated bfloat16 convolutions are no bound worth minutes
        bound, gflops = benchmark.conv_bound_rate(batch, jit_compile=False,
                                                  repeats=1 if quick else 3,
                                                  num_classes=num_classes, precision="bfloat16")
        results.update(conv_bf16_gflops=gflops, train_bf16_conv_bound_img_s=bound)
    # --quick times each evaluation once, after the untimed pass that traces (or compiles) it.
    evaluation = dict(batches=2 if quick else 4, repeats=1 if quick else 3)
    results["eval_img_s"] = benchmark.eval_rate(source, normalization, 64, ten_crop=False,
                                                **evaluation)
    results["eval_10crop_img_s"] = benchmark.eval_rate(source, normalization, 8, ten_crop=True,
                                                       **evaluation)
    # As alexnet-eval computes by default here (runtime.resolve_inference: precision, XLA).
    inference = runtime.resolve_inference()
    auto = {"precision": inference["mixed_precision"], "jit_compile": inference["jit_compile"]}
    results["eval_auto_img_s"] = benchmark.eval_rate(source, normalization, 64, ten_crop=False,
                                                     **evaluation, **auto)
    results["eval_10crop_auto_img_s"] = benchmark.eval_rate(
        source, normalization, 8, ten_crop=True, **evaluation, **auto)
    p50, p99, b32 = benchmark.serving_latency(requests=30 if quick else 100)
    results.update(serving_p50_ms=p50, serving_p99_ms=p99, serving_b32_img_s=b32)
    results["peak_rss_mb"] = benchmark.peak_rss_mb()
    if not quick:      # fresh processes that load 244 MB: not for a quick look
        results.update(weights_load_results(quick))
    results.update(auto_precision=auto_precision, auto_fp32_jit=fp32_jit,
                   native_bfloat16=native_bf16)
    if FLAGS.reference_json:
        with open(FLAGS.reference_json) as f:
            reference = json.load(f)
        if reference.get("batch_size") != batch:
            raise app.UsageError(f"--reference_json was measured at batch "
                                 f"{reference.get('batch_size')}, this run at {batch}; run both "
                                 "at one --batch_size")
        results["reference_torch_fp32_img_s"] = reference["train_fp32_img_s"]
    results.update(ratios(results))
    if FLAGS.serving_model_dir:        # in a process of its own: the conversions' memory is freed
        results.update(serving_in_a_child(quick))
    return results


def serving_in_a_child(quick):
    import subprocess
    import sys
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "serving.json")
        subprocess.run([sys.executable, "-m", "alexnet_tf.cli.benchmark", "--only_serving",
                        f"--serving_model_dir={FLAGS.serving_model_dir}", f"--json={out}"] +
                       (["--quick"] if quick else []), check=True)
        with open(out) as f:
            found = json.load(f)
    return {key: found[key] for key in ("serving_table", "serving_table_images")}


def ratios(r):
    """The issues' targets as ratios of measurements taken in the same run.

    The fp32 figures are those of the step `--jit_compile=auto` runs in float32 on
    this hardware (XLA on AVX2-only CPUs, off elsewhere).
    """
    fp32_key = "train_fp32_jit_synthetic_img_s" if r["auto_fp32_jit"] else \
        "train_fp32_synthetic_img_s"
    fp32, bf16 = r[fp32_key], r["train_bf16_synthetic_img_s"]
    flop_bound_forward_ms = benchmark.FORWARD_GFLOP / r["matmul_fp32_gflops"] * 1000
    out = {
        "train_fp32_auto_img_s": fp32,
        "train_fp32_fraction_of_flop_limit": benchmark.fraction_of_limit(
            fp32, benchmark.TRAIN_GFLOP, r["matmul_fp32_gflops"]),
        "train_bf16_fraction_of_flop_limit": benchmark.fraction_of_limit(
            bf16, benchmark.TRAIN_GFLOP, r["matmul_bf16_gflops"]),
        "conv_bound_fraction_of_flop_limit": benchmark.fraction_of_limit(
            r["train_fp32_conv_bound_img_s"], benchmark.TRAIN_GFLOP, r["matmul_fp32_gflops"]),
        "train_fp32_over_conv_bound": fp32 / r["train_fp32_conv_bound_img_s"],
        "train_bf16_over_conv_bound": (bf16 / r["train_bf16_conv_bound_img_s"]
                                       if r.get("train_bf16_conv_bound_img_s") else None),
        "train_bf16_over_fp32": bf16 / fp32,
        "train_fp32_jit_over_nojit": (r["train_fp32_jit_synthetic_img_s"]
                                      / r["train_fp32_synthetic_img_s"]),
        "train_bf16_jit_over_nojit": r["train_bf16_jit_synthetic_img_s"] / bf16,
        "pipeline_over_train_fp32": r["pipeline_img_s"] / fp32,
        "pipeline_train_over_synthetic": r["train_fp32_pipeline_img_s"] / fp32,
        "serving_flop_bound_ms": flop_bound_forward_ms,
        "eval_auto_over_fp32": r["eval_auto_img_s"] / r["eval_img_s"],
        "eval_10crop_auto_over_fp32": r["eval_10crop_auto_img_s"] / r["eval_10crop_img_s"],
        "serving_p50_over_flop_bound": r["serving_p50_ms"] / flop_bound_forward_ms,
    }
    if r.get("reference_torch_fp32_img_s"):
        out["train_fp32_over_torch"] = fp32 / r["reference_torch_fp32_img_s"]
    return out


def readable_lines(r):
    """The headline numbers in words, each against what it is measured against."""
    lines = []

    def train(name, rate, matmul, bound):
        estimate = rate * benchmark.TRAIN_GFLOP / matmul
        line = (f"{name} training: {rate:.1f} images/s = {estimate:.2f}x the matmul estimate "
                f"({benchmark.TRAIN_GFLOP} GFLOP an image at the best matmul's {matmul:.0f} "
                "GFLOP/s)")
        if bound:
            line += f", {rate / bound:.2f} of the convolutions' bound ({bound:.1f} images/s)"
        lines.append(line)
    if "train_fp32_auto_img_s" in r:
        train("fp32", r["train_fp32_auto_img_s"], r["matmul_fp32_gflops"],
              r["train_fp32_conv_bound_img_s"])
        train("bf16", r["train_bf16_synthetic_img_s"], r["matmul_bf16_gflops"],
              r.get("train_bf16_conv_bound_img_s"))
        lines.append(f"bf16 training over fp32: {r['train_bf16_over_fp32']:.2f}x; evaluation as "
                     f"alexnet-eval computes here ({r['auto_precision']}): "
                     f"{r['eval_auto_over_fp32']:.2f}x float32")
        lines.append(f"serving, batch 1: p50 {r['serving_p50_ms']:.1f} ms = "
                     f"{r['serving_p50_over_flop_bound']:.1f}x the time the best fp32 matmul "
                     f"would take for its {benchmark.FORWARD_GFLOP} GFLOP")
    return lines


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    common.quiet_libraries()
    if not FLAGS.only_serving:     # serving is measured in fresh processes
        hardware.keep_freed_memory()   # as alexnet-train does
    results = measure(FLAGS.quick)
    machine = {**hardware.detected().as_dict(), "cores": os.cpu_count(),
               "tensorflow": tf.__version__, "python": platform.python_version()}
    print(f"machine: {machine['cpu_model']}, class {machine['cpu_class']} "
          f"(flags {' '.join(machine['cpu_flags']) or 'none relevant'}), {machine['cores']} cores")
    for line in readable_lines(results):
        print(line)
    print(f"{'measurement (JSON key, docs/BENCHMARKS.md)':<44} {'value':>12}")
    for key, value in results.items():
        if isinstance(value, list):      # the serving table, printed as it was measured
            continue
        print(f"{key:<44} {value:>12.3f}" if isinstance(value, float)
              else f"{key:<44} {str(value):>12}")
    if FLAGS.json:
        payload = {**results, "machine": machine, "quick": FLAGS.quick}
        files.atomic_write_json(FLAGS.json, payload)


def run():
    common.run_tool("benchmark", main)


if __name__ == "__main__":
    run()
