"""alexnet-benchmark: training, pipeline and evaluation speed on this machine; table + JSON."""

import json
import platform

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
    steps = 2 if quick else 4
    batch = FLAGS.batch_size
    source = input_pipeline.open_source(FLAGS.dataset, FLAGS.data_dir)
    stats = input_pipeline.stats_for(source)
    results = {"batch_size": batch}
    results["matmul_fp32_gflops"] = benchmark.matmul_gflops("float32")
    results["matmul_bf16_gflops"] = benchmark.matmul_gflops("bfloat16")
    results["pipeline_img_s"] = benchmark.pipeline_rate(source, stats, batch,
                                                        batches=5 if quick else 20)
    retraces = 0
    for key, precision in (("train_fp32_synthetic_img_s", "none"),
                           ("train_bf16_synthetic_img_s", "bfloat16")):
        results[key], traces = benchmark.train_step_rate(batch, precision, steps=steps,
                                                         num_classes=len(source.class_names))
        retraces += traces - 1
    data = input_pipeline.train_dataset(source, stats, batch)
    results["train_fp32_pipeline_img_s"], traces = benchmark.train_step_rate(
        batch, "none", steps=steps, dataset=data, num_classes=len(source.class_names))
    retraces += traces - 1
    results["retraces"] = retraces
    results["eval_img_s"] = benchmark.eval_rate(source, stats, 64, ten_crop=False,
                                                batches=2 if quick else 4)
    results["eval_10crop_img_s"] = benchmark.eval_rate(source, stats, 8, ten_crop=True,
                                                       batches=2 if quick else 4)
    results["peak_rss_mb"] = benchmark.peak_rss_mb()
    results["train_fp32_fraction_of_flop_limit"] = benchmark.fraction_of_limit(
        results["train_fp32_synthetic_img_s"], benchmark.TRAIN_GFLOP, results["matmul_fp32_gflops"])
    results["train_bf16_fraction_of_flop_limit"] = benchmark.fraction_of_limit(
        results["train_bf16_synthetic_img_s"], benchmark.TRAIN_GFLOP, results["matmul_bf16_gflops"])
    results["pipeline_over_train_fp32"] = (results["pipeline_img_s"]
                                           / results["train_fp32_synthetic_img_s"])
    results["pipeline_train_over_synthetic"] = (results["train_fp32_pipeline_img_s"]
                                                / results["train_fp32_synthetic_img_s"])
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    common.quiet_libraries()
    results = measure(FLAGS.quick)
    machine = {"processor": platform.processor() or platform.machine(),
               "avx512_bf16": benchmark.has_avx512_bf16()}
    print(f"{'measurement':<36} {'value':>12}")
    for key, value in results.items():
        print(f"{key:<36} {value:>12.3f}" if isinstance(value, float) else f"{key:<36} {value:>12}")
    if FLAGS.json:
        payload = {**results, "machine": machine, "quick": FLAGS.quick}
        input_pipeline.atomic_write(FLAGS.json, json.dumps(payload, indent=2).encode())


def run():
    app.run(main)


if __name__ == "__main__":
    run()
