"""The benchmark harness runs and writes valid JSON (speed itself is never asserted here)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ("train_fp32_synthetic_img_s", "train_fp32_pipeline_img_s", "train_bf16_synthetic_img_s",
        "pipeline_img_s", "eval_img_s", "eval_10crop_img_s", "peak_rss_mb", "matmul_fp32_gflops",
        "matmul_bf16_gflops", "retraces", "serving_p50_ms", "serving_p99_ms", "serving_b32_img_s",
        "train_fp32_jit_synthetic_img_s", "train_bf16_jit_synthetic_img_s", "train_fp32_auto_img_s",
        "matmul_fp32_tf_1024_gflops", "matmul_fp32_numpy_1024_gflops", "conv_fp32_gflops",
        "train_fp32_conv_bound_img_s", "conv_bound_fraction_of_flop_limit", "eval_auto_img_s",
        "eval_10crop_auto_img_s")


def test_quick_benchmark_writes_every_key(tiny_data_dir, tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-m", "alexnet_tf.cli.benchmark", "--quick", "--batch_size=4",
         "--dataset=alexnet_shapes/tiny", f"--data_dir={tiny_data_dir}", f"--json={out}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pipeline_img_s" in result.stdout                  # the printed table
    assert "retracing" not in result.stdout + result.stderr  # TF's warnings stay out
    payload = json.loads(out.read_text())
    # The headline in words: each rate against what it is measured against (4.14 GFLOP an image).
    fp32 = payload["train_fp32_auto_img_s"]
    assert (f"fp32 training: {fp32:.1f} images/s = "
            f"{fp32 * 4.14 / payload['matmul_fp32_gflops']:.2f}x the matmul estimate" in
            result.stdout), result.stdout
    assert (f"{fp32 / payload['train_fp32_conv_bound_img_s']:.2f} of the convolutions' bound"
            in result.stdout)
    if payload["native_bfloat16"]:      # a bfloat16 convolution bound beside the float32 one
        bf16 = payload["train_bf16_synthetic_img_s"]
        assert payload["conv_bf16_gflops"] > 0
        assert payload["train_bf16_over_conv_bound"] == pytest.approx(
            bf16 / payload["train_bf16_conv_bound_img_s"])
    else:
        assert "train_bf16_conv_bound_img_s" not in payload
    for key in KEYS:
        assert isinstance(payload[key], (int, float)), key
        assert payload[key] >= 0, key
    assert payload["retraces"] == 0                            # one trace per train step function
    assert payload["quick"] is True and payload["batch_size"] == 4
    assert payload["serving_p50_ms"] <= payload["serving_p99_ms"]
    assert payload["serving_p50_over_flop_bound"] == pytest.approx(
        payload["serving_p50_ms"] / (1.45 / payload["matmul_fp32_gflops"] * 1000))
    # The limit divides by the best matmul probe; the fp32 step is the one auto XLA picks.
    assert payload["matmul_fp32_gflops"] == max(payload["matmul_fp32_tf_1024_gflops"],
                                                payload["matmul_fp32_numpy_1024_gflops"])
    fp32 = payload["train_fp32_jit_synthetic_img_s" if payload["auto_fp32_jit"]
                   else "train_fp32_synthetic_img_s"]
    assert payload["train_fp32_auto_img_s"] == fp32
    assert payload["eval_auto_over_fp32"] == pytest.approx(
        payload["eval_auto_img_s"] / payload["eval_img_s"])
    assert payload["train_fp32_fraction_of_flop_limit"] == pytest.approx(
        fp32 * 4.14 / payload["matmul_fp32_gflops"])
    assert payload["train_fp32_over_conv_bound"] == pytest.approx(
        fp32 / payload["train_fp32_conv_bound_img_s"])
    # Recorded beside the numbers: this CPU's flags, or those of the class the suite runs as.
    from alexnet_tf import hardware
    override = os.environ.get(hardware.CPU_CLASS_ENV)
    if override:
        flags = set(hardware.CPU_CLASS_FLAGS[override])
    else:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    machine = payload["machine"]
    assert set(machine["cpu_flags"]) == flags & {"avx2", "fma", "avx512f", "avx512_bf16",
                                                 "amx_bf16"}
    assert machine["cpu_class"] and machine["cpu_model"]
    assert payload["auto_precision"] == ("bfloat16" if flags & {"avx512_bf16", "amx_bf16"}
                                         else "float32")


def test_the_flop_constants_are_figure_2_counted_by_hand():
    """Multiply-accumulates per 224 image, layer by layer (output size x kernel volume)."""
    from alexnet_tf.analysis import benchmark
    macs = {"conv1": 55 * 55 * 96 * (11 * 11 * 3), "conv2": 27 * 27 * 256 * (5 * 5 * 48),
            "conv3": 13 * 13 * 384 * (3 * 3 * 256), "conv4": 13 * 13 * 384 * (3 * 3 * 192),
            "conv5": 13 * 13 * 256 * (3 * 3 * 192), "fc6": 9216 * 4096, "fc7": 4096 * 4096,
            "fc8": 4096 * 1000}
    forward = 2 * sum(macs.values()) / 1e9                              # 1.4488 GFLOP
    # Training: forward, then a kernel gradient and an input gradient of each layer's size,
    # except conv1's input gradient (the image needs none).
    train = 3 * forward - 2 * macs["conv1"] / 1e9                        # 4.1355 GFLOP
    assert benchmark.FORWARD_GFLOP == pytest.approx(forward, rel=0.005)
    assert benchmark.TRAIN_GFLOP == pytest.approx(train, rel=0.005)


def test_conv_passes_count_the_papers_convolutions_and_their_gradients():
    from alexnet_tf.analysis import benchmark
    from alexnet_tf.model.network import build_alexnet
    found = benchmark.conv_passes(build_alexnet(10, devices=None), batch_size=2)
    # Per image and tower, multiply-accumulates: output size^2 * kernel^2 * in * out maps (fig. 2).
    macs = {"conv1": 55 * 55 * 11 * 11 * 3 * 48, "conv2": 27 * 27 * 5 * 5 * 48 * 128,
            "conv3": 13 * 13 * 3 * 3 * 256 * 192, "conv4": 13 * 13 * 3 * 3 * 192 * 192,
            "conv5": 13 * 13 * 3 * 3 * 192 * 128}
    assert [layer.name for layer, *_ in found] == [f"conv{i}_{t}" for i in range(1, 6)
                                                   for t in "ab"]
    for layer, shape, passes, gflop in found:
        name = layer.name[:5]
        assert passes == (2 if name == "conv1" else 3)   # the image needs no gradient
        assert gflop == pytest.approx(2 * 2 * macs[name] * passes / 1e9)
    assert [shape for _, shape, *_ in found][::2] == [
        (2, 228, 228, 3), (2, 27, 27, 48), (2, 13, 13, 256), (2, 13, 13, 192), (2, 13, 13, 192)]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
