"""alexnet-benchmark: training, pipeline and evaluation speed on this machine; table + JSON."""

import json
import platform

import tensorflow as tf
from absl import app, flags

from alexnet_tf import benchmark, input_pipeline
from alexnet_tf.cli import common

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "alexnet_shapes", "Dataset for the pipeline measurements.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
flags.DEFINE_integer("batch_size", 128, "Training batch (the paper's 128).")
flags.DEFINE_boolean("quick", False, "Fewer steps and repeats (same keys), for a quick look.")
flags.DEFINE_string("json", None, "Write the results to this JSON file.")


def measure(quick):
    """Every measurement, as one flat dict of numbers (keys documented in docs/BENCHMARKS.md)."""
    steps = 1 if quick else 4
    batch = FLAGS.batch_size
    source = input_pipeline.open_source(FLAGS.dataset, FLAGS.data_dir)
    num_classes = len(source.class_names)
    stats = input_pipeline.stats_for(source)
    results = {"batch_size": batch}
    results["matmul_fp32_gflops"] = benchmark.matmul_gflops("float32")
    results["matmul_bf16_gflops"] = benchmark.matmul_gflops("bfloat16")
    results["pipeline_img_s"] = benchmark.pipeline_rate(source, stats, batch,
                                                        batches=5 if quick else 20)
    retraces = 0

    def train_rate(precision, jit=False, dataset=None):
        nonlocal retraces
        rate, traces = benchmark.train_step_rate(batch, precision, jit_compile=jit, steps=steps,
                                                 dataset=dataset, num_classes=num_classes)
        retraces += traces - 1
        return rate

    results["train_fp32_synthetic_img_s"] = train_rate("none")
    results["train_bf16_synthetic_img_s"] = train_rate("bfloat16")
    results["train_fp32_pipeline_img_s"] = train_rate(
        "none", dataset=input_pipeline.train_dataset(source, stats, batch))
    results["train_fp32_jit_synthetic_img_s"] = train_rate("none", jit=True)
    results["train_bf16_jit_synthetic_img_s"] = train_rate("bfloat16", jit=True)
    # float16 has no fast path on CPUs (measured 7.5 images/s here, 72 s for one look): only
    # measured with a GPU, or in the full run.
    fp16 = not quick or bool(tf.config.list_physical_devices("GPU"))
    results["train_fp16_synthetic_img_s"] = train_rate("float16") if fp16 else None
    results["retraces"] = retraces
    results["eval_img_s"] = benchmark.eval_rate(source, stats, 64, ten_crop=False,
                                                batches=2 if quick else 4)
    results["eval_10crop_img_s"] = benchmark.eval_rate(source, stats, 8, ten_crop=True,
                                                       batches=2 if quick else 4)
    p50, p99, b32 = benchmark.serving_latency(requests=30 if quick else 100)
    results.update(serving_p50_ms=p50, serving_p99_ms=p99, serving_b32_img_s=b32)
    results["peak_rss_mb"] = benchmark.peak_rss_mb()
    results.update(ratios(results))
    return results


def ratios(r):
    """The issue's targets as ratios of measurements taken in the same run."""
    fp32, bf16 = r["train_fp32_synthetic_img_s"], r["train_bf16_synthetic_img_s"]
    flop_bound_forward_ms = benchmark.FORWARD_GFLOP / r["matmul_fp32_gflops"] * 1000
    return {
        "train_fp32_fraction_of_flop_limit": benchmark.fraction_of_limit(
            fp32, benchmark.TRAIN_GFLOP, r["matmul_fp32_gflops"]),
        "train_bf16_fraction_of_flop_limit": benchmark.fraction_of_limit(
            bf16, benchmark.TRAIN_GFLOP, r["matmul_bf16_gflops"]),
        "train_bf16_over_fp32": bf16 / fp32,
        "train_fp32_jit_over_nojit": r["train_fp32_jit_synthetic_img_s"] / fp32,
        "train_bf16_jit_over_nojit": r["train_bf16_jit_synthetic_img_s"] / bf16,
        "pipeline_over_train_fp32": r["pipeline_img_s"] / fp32,
        "pipeline_train_over_synthetic": r["train_fp32_pipeline_img_s"] / fp32,
        "serving_flop_bound_ms": flop_bound_forward_ms,
        "serving_p50_over_flop_bound": r["serving_p50_ms"] / flop_bound_forward_ms,
    }


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    common.quiet_libraries()
    results = measure(FLAGS.quick)
    machine = {"processor": platform.processor() or platform.machine(),
               "avx512_bf16": benchmark.has_avx512_bf16()}
    print(f"{'measurement':<36} {'value':>12}")
    for key, value in results.items():
        print(f"{key:<36} {value:>12.3f}" if isinstance(value, float)
              else f"{key:<36} {str(value):>12}")
    if FLAGS.json:
        payload = {**results, "machine": machine, "quick": FLAGS.quick}
        input_pipeline.atomic_write(FLAGS.json, json.dumps(payload, indent=2).encode())


def run():
    app.run(main)


if __name__ == "__main__":
    run()
