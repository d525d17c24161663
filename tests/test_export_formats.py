"""`alexnet-export` of each deployment format alone with its calibrated quantization (int8),
each in a process of its own that has built no network before (forked from one that only
imported the package, `helpers.forked`), as a user runs it (a file apart from test_export so
that its exports run beside the other files; the unquantized files are test_export's runtime
test's)."""

import json
import os

import pytest
import tensorflow as tf

from helpers import cli, tiny_run


@pytest.fixture(scope="module")
def run_dir(tiny_data_dir, tmp_path_factory):
    return tiny_run(str(tmp_path_factory.mktemp("run")), tiny_data_dir)


# Every deployment format alone with its int8 quantization, and the file each one writes.
# Unquantized, each format is also the other's companion in test_export's runtime test
# (`--format=saved_model,litert,onnx`), which checks their outputs in LiteRT and ONNX Runtime.
# LiteRT's float16 and dynamic-range conversions (`--quantize` through the same export code,
# without calibration) are checked in LiteRT on a small network (test_deploy.py).
ALONE = [("litert", "int8", "alexnet_int8.tflite"), ("onnx", "int8", "alexnet_int8.onnx")]
SAVED_MODEL_FILES = {"saved_model.pb", "fingerprint.pb", "variables", "assets", "assets.extra"}


@pytest.mark.parametrize("fmt,quantize,name", ALONE, ids=[f"{f}-{q}" for f, q, _ in ALONE])
def test_each_format_exports_alone_in_its_own_process_beside_a_servable_savedmodel(
        fmt, quantize, name, run_dir, tmp_path):
    """`alexnet-export --format=F --quantize=Q` by itself (`--format=onnx` alone once ended in
    "The model provided has never called"; `--format=litert,onnx --quantize=int8` wrote a version
    without a SavedModel, which TF Serving and `--saved_model=BASE` then could not load)."""
    base = str(tmp_path / "alexnet")
    done = cli("export", f"--model_dir={run_dir}", f"--export_base={base}", f"--format={fmt}",
               f"--quantize={quantize}", "--check_images=8", "--calibration_images=8",
               timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert os.listdir(base) == ["1"]
    folder = os.path.join(base, "1")
    assert set(os.listdir(folder)) == SAVED_MODEL_FILES | {name, "labels.txt", "export_report.json"}
    assert tf.saved_model.contains_saved_model(folder)
    report = json.load(open(os.path.join(folder, "export_report.json")))
    assert [(a["format"], a["quantize"], a["file"]) for a in report["artifacts"]] == [
        (fmt, quantize, name)]
