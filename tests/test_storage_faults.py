"""Storage faults: a full disk, a truncated checkpoint, stale temporaries, oversized images.

Each gets one line and a way on; the complete checkpoints stay byte-identical and
a second run resumes and finishes.
"""

import contextlib
import glob
import hashlib
import logging
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import errors, files
from alexnet_tf.config import ModelConfig, TrainConfig
from alexnet_tf.data import dataset_stats, preprocessing, sources
from alexnet_tf.model.network import build_alexnet
from alexnet_tf.serving import export
from alexnet_tf.training import train
from helpers import cli

TINY = "alexnet_shapes/tiny"
# The two-tower net at 10 classes: 60,965,224 - (4096 * 1000 + 1000) + (4096 * 10 + 10)
# = 56,909,194 weights, and as many velocities, float32: 455.3 MB (plus a few bytes).
CHECKPOINT_MB = round(2 * 4 * 56_909_194 / 1e6)


def tiny_config(model_dir, data_dir, **overrides):
    settings = dict(model_dir=str(model_dir), dataset=TINY, data_dir=data_dir, batch_size=8,
                    epochs=1, log_steps=2, checkpoint_steps=2, seed=1, input_scale="std",
                    learning_rate=0.001, mixed_precision="float32", jit_compile="false",
                    model=ModelConfig(devices="none", kernel_init="he", bias_init="zeros"))
    settings.update(overrides)
    return TrainConfig(**settings)


def digests(model_dir, step):
    """{file name: sha1} of checkpoint ckpt-<step>'s files."""
    paths = glob.glob(os.path.join(str(model_dir), f"ckpt-{step}.*"))
    assert paths, f"no ckpt-{step} in {model_dir}"
    return {os.path.basename(p): hashlib.sha1(open(p, "rb").read()).hexdigest() for p in paths}


def train_args(data_dir, model_dir, *more):
    return [f"--model_dir={model_dir}", f"--dataset={TINY}", f"--data_dir={data_dir}",
            "--batch_size=8", "--checkpoint_steps=2", "--log_steps=2", "--input_scale=std",
            "--learning_rate=0.001", "--kernel_init=he", "--bias_init=zeros",
            "--mixed_precision=float32", "--jit_compile=false", "--towers_on=none", *more]


@contextlib.contextmanager
def small_disk(path, megabytes):
    """A tmpfs of `megabytes` at `path` (root only: the test is skipped otherwise)."""
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", path],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)


def one_error_line(result, program="alexnet-train"):
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{program}: error")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def test_disk_full_stops_with_one_line_and_a_second_run_finishes(tiny_data_dir, tmp_path):
    disk = str(tmp_path / "disk")
    with small_disk(disk, 2 * CHECKPOINT_MB + 150):       # room for two checkpoints, not three
        run = os.path.join(disk, "run")
        first = cli("train", *train_args(tiny_data_dir, run, "--max_steps=8"), timeout=600)
        assert first.returncode == 1
        line = one_error_line(first)
        assert line.startswith(f"alexnet-train: error: no space left on device writing "
                               f"{run}/ckpt-6 ({CHECKPOINT_MB} MB needed, ")
        assert line.endswith(f"free): free space or lower --keep_checkpoints; the last complete "
                             f"checkpoint is {run}/ckpt-4")
        kept = {**digests(run, 2), **digests(run, 4)}
        assert not glob.glob(os.path.join(run, "*_temp*"))
        assert tf.train.latest_checkpoint(run).endswith("ckpt-4")
        # Free space (a larger disk), run again: it resumes from ckpt-4 and finishes.
        subprocess.run(["mount", "-o", f"remount,size={4 * CHECKPOINT_MB + 300}m", disk],
                       check=True)
        second = cli("train", *train_args(tiny_data_dir, run, "--max_steps=8"), timeout=600)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "Resuming from step 4" in second.stdout
        assert tf.train.latest_checkpoint(run).endswith("ckpt-8")
        assert digests(run, 4) == {k: v for k, v in kept.items() if k.startswith("ckpt-4")}


def test_disk_filling_during_a_save_removes_the_partial_files(tiny_data_dir, tmp_path,
                                                              monkeypatch):
    disk = str(tmp_path / "disk")
    with small_disk(disk, CHECKPOINT_MB + 150):
        run = os.path.join(disk, "run")
        train.train(tiny_config(run, tiny_data_dir, max_steps=2), log=lambda line: None)
        kept = digests(run, 2)
        # The check before the save is fooled (another program freed space and took it
        # back): the save itself meets the full disk.
        monkeypatch.setattr(files, "free_bytes", lambda path: 10 ** 12)
        with pytest.raises(errors.DiskFullError) as error:
            train.train(tiny_config(run, tiny_data_dir, max_steps=4), log=lambda line: None)
        message = str(error.value)
        assert "\n" not in message and message.startswith(
            f"no space left on device writing {run}/ckpt-4 ({CHECKPOINT_MB} MB needed")
        assert message.endswith(f"the last complete checkpoint is {run}/ckpt-2")
        assert not glob.glob(os.path.join(run, "*_temp*"))    # the partial save is gone
        assert digests(run, 2) == kept


def test_a_disk_filling_during_a_litert_conversion_leaves_no_version(tiny_data_dir, tmp_path):
    """The SavedModel fits, the LiteRT file (as large again) does not: one line, no version
    folder, no staging folder; the run's files are untouched."""
    run = str(tmp_path / "run")
    train.train(tiny_config(run, tiny_data_dir, max_steps=1), log=lambda line: None)
    pytest.importorskip("ai_edge_litert")
    disk = str(tmp_path / "disk")
    weights_mb = 4 * 56_909_194 / 1e6
    with small_disk(disk, round(weights_mb * 1.5)):
        base = os.path.join(disk, "alexnet")
        with pytest.raises(errors.DiskFullError) as error:
            export.export(run, base, formats=("saved_model", "litert"), check_images=4,
                          log=lambda line: None)
        message = str(error.value)
        assert "\n" not in message and message.startswith(
            f"no space left on device writing {base}/1 (") and "nothing was written" in message
        assert os.listdir(base) == []                      # no version, no staging folder


def test_stale_temporaries_are_removed_and_reported(tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    train.train(tiny_config(run, tiny_data_dir, max_steps=2), log=lambda line: None)
    kept = digests(run, 2)
    (run / "ckpt-9_temp").mkdir()
    (run / "ckpt-9_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x" * 2_000_000)
    (run / ".tmp-run_config.jsonab12").write_bytes(b"{")
    lines = []
    train.train(tiny_config(run, tiny_data_dir, max_steps=4), log=lines.append)
    assert f"Removed 2 temporary file(s) of interrupted saves in {run} (2.0 MB freed)" in lines
    assert not (run / "ckpt-9_temp").exists() and not (run / ".tmp-run_config.jsonab12").exists()
    assert any(line.startswith("Resuming from step 2") for line in lines)
    assert digests(run, 2) == kept and tf.train.latest_checkpoint(str(run)).endswith("ckpt-4")


def _truncate(model_dir, step):
    data = glob.glob(os.path.join(str(model_dir), f"ckpt-{step}.data-*"))[0]
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)


def test_a_truncated_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(
        tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    train.train(tiny_config(run, tiny_data_dir, max_steps=4), log=lambda line: None)
    kept = digests(run, 2)
    _truncate(run, 4)
    lines = []
    train.train(tiny_config(run, tiny_data_dir, max_steps=6), log=lines.append)
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: checkpoint {run}/ckpt-4 cannot "
                                                         "be read (")
    assert warnings[0].endswith(f"moved it to {run}/ckpt-4.corrupt and using the one before it")
    assert any(line.startswith("Resuming from step 2 (epoch 1)") for line in lines)
    assert sorted(os.listdir(run / "ckpt-4.corrupt")) == ["ckpt-4.data-00000-of-00001",
                                                           "ckpt-4.index"]
    assert digests(run, 2) == kept and tf.train.latest_checkpoint(str(run)).endswith("ckpt-6")

    # The tools: best/latest fall back with a warning; a checkpoint named explicitly stops.
    _truncate(run, 6)
    image = tmp_path / "a.png"
    image.write_bytes(tf.io.encode_png(np.zeros((40, 50, 3), np.uint8)).numpy())
    named = cli("predict", f"--model_dir={run}", f"--checkpoint={run}/ckpt-6", str(image))
    assert named.returncode == 1
    assert one_error_line(named, "alexnet-predict").startswith(
        f"alexnet-predict: error: checkpoint {run}/ckpt-6 cannot be read (")
    big = tmp_path / "big.png"
    big.write_bytes(_png_header(30000, 30000))
    latest = cli("predict", f"--model_dir={run}", "--checkpoint=latest", str(image), str(big))
    assert latest.returncode == 1, latest.stderr[-3000:]            # big.png is refused
    assert str(image) in latest.stdout and latest.stdout.count("%") == 5
    assert one_error_line(latest, "alexnet-predict") == (
        f"alexnet-predict: error: {big}: 30000 x 30000 pixels, larger than the 100-megapixel "
        "limit")
    assert f"warning: checkpoint {run}/ckpt-6 cannot be read" in latest.stderr
    assert "Traceback" not in latest.stderr and os.path.isdir(run / "ckpt-6.corrupt")
    assert digests(run, 2) == kept


def _png_header(width, height):
    """The start of a PNG of this size: the signature and a valid IHDR chunk, no pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))


def _jpeg_claiming(width, height):
    """A real small JPEG whose frame header (SOF0) claims another size."""
    data = bytearray(tf.io.encode_jpeg(np.zeros((8, 8, 3), np.uint8)).numpy())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_oversized_images_are_refused_from_their_headers(tmp_path):
    big_png, big_jpeg = _png_header(30000, 30000), _jpeg_claiming(12000, 9000)
    for data, size in ((big_png, [30000, 30000]), (big_jpeg, [9000, 12000])):
        assert list(preprocessing.encoded_size(data).numpy()) == size
    # The serving graph: that request alone fails, before decoding; the next one is served.
    stats = dataset_stats.Stats(np.zeros((256, 256, 3), np.float32), np.zeros(3, np.float32),
                                np.ones(3, np.float32), np.eye(3, dtype=np.float32), 1)
    module = export.ServingModule(build_alexnet(3, devices=None, seed=0), ["a", "b", "c"],
                                  dataset_stats.Normalization(stats))
    serve = module.signatures()[export.SIGNATURE_BYTES]
    for data, said in ((big_png, "30000 x 30000 pixels"), (big_jpeg, "12000 x 9000 pixels")):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=f"{said}, larger than the 100-megapixel limit"):
            serve(image_bytes=tf.constant([data]))
    small = tf.io.encode_png(np.zeros((40, 50, 3), np.uint8)).numpy()
    assert serve(image_bytes=tf.constant([small]))["probabilities"].shape == (1, 3)


def test_the_folder_scan_says_an_image_is_too_large(tmp_path, caplog):
    root = tmp_path / "folder"
    for split in ("train", "validation"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            (root / split / cls / "ok.png").write_bytes(
                tf.io.encode_png(np.full((30, 30, 3), 9, np.uint8)).numpy())
    (root / "train" / "a" / "big.png").write_bytes(_png_header(30000, 30000))
    with caplog.at_level(logging.WARNING):
        source = sources.open_source(f"image_folder:{root}")
        assert source.num_examples("train") == 2 and source.skipped["train"] == 1
    assert ("big.png: 30000 x 30000 pixels, larger than the 100-megapixel limit"
            in " ".join(r.getMessage() for r in caplog.records))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
