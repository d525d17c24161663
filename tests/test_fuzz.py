"""Hostile files: seeded mutations of valid inputs end in success or one line naming the file.

Each input kind a user hands the tools (caffemodel and mean files for
alexnet-import, a run's run_config.json and statistics, an image folder's scan
cache, checkpoint index files, images for alexnet-predict and the folder scan)
is mutated from a valid file: bit flips, truncation, random bytes, a huge
length field, garbage appended, a piece cut out or zeroed, the empty file, and
for JSON a hostile value in place of a valid one. Every case must end in
success or the project's one-line error (`errors.UserError`, or the Python
API's one-line ValueError) naming the file: never another exception, never
more than CASE_SECONDS, and the caffemodel reader never above 2x the file's
size plus CAFFE_MEMORY_SLACK_MB of memory. Cases per kind: CASES.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf import applications, errors
from alexnet_tf.config import ModelConfig, TrainConfig
from alexnet_tf.data import dataset_stats, sources
from alexnet_tf.model import caffe
from alexnet_tf.training import state
from alexnet_tf.training.restore import build_model
from alexnet_tf.training.rundir import Run, RUN_CONFIG, RunDir, RunDirError

sys.path.insert(0, os.path.dirname(__file__))
from caffe_reference import caffemodel_bytes, mean_bytes, random_alexnet  # noqa: E402
from fuzz import byte_mutants, json_mutants  # noqa: E402
from helpers import REPO, assert_equal  # noqa: E402

SEED = 20261125
CASE_SECONDS = 30
CAFFE_MEMORY_SLACK_MB = 64
CASES = {"caffemodel (bvlc_alexnet-sized)": 8, "caffemodel (small blobs)": 70,
         "mean .binaryproto": 40, "run_config.json": 60, "statistics (json)": 40,
         "statistics (mean image .npy)": 25, "scan cache": 36, "checkpoint index": 30,
         "images (predict, load_image, folder scan)": 64}


class Timeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds):
    def expire(signum, frame):
        raise Timeout(f"still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def memory_mb():
    """(current RSS, peak RSS since the last reset_peak) in MB, from /proc/self/status."""
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))


def reset_peak():
    """Resets the kernel's peak-RSS mark (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def attempt(path, target, allowed=errors.UserError):
    """("succeeded" | "refused" | "bug", detail) of `target(path)`.

    Refused: a one-line `allowed` error naming the file; anything else is a bug.
    """
    try:
        with time_limit(CASE_SECONDS):
            target(path)
    except allowed as error:
        message = str(error)
        if "\n" in message.strip():
            return "bug", f"a message of several lines: {message!r}"
        if os.path.basename(path) not in message and os.path.dirname(path) not in message:
            return "bug", f"a message that does not name the file: {message!r}"
        return "refused", message
    except Exception as error:                         # noqa: BLE001 (any other is a bug)
        return "bug", f"{type(error).__name__}: {str(error)[:300]}"
    return "succeeded", None


def report(kind, outcomes):
    """Asserts no case was a bug; prints the kind's count (pytest -s shows it)."""
    bugs = [f"{kind}, {name}: {detail}" for name, outcome, detail in outcomes if outcome == "bug"]
    assert not bugs, "\n".join(bugs)
    assert len(outcomes) == CASES[kind], (kind, len(outcomes))
    counts = {o: sum(outcome == o for _, outcome, _ in outcomes) for o in ("succeeded", "refused")}
    print(f"\nfuzz: {kind}: {len(outcomes)} cases, {counts['succeeded']} succeeded, "
          f"{counts['refused']} refused in one line")


def run_cases(kind, mutants, path, target, **kwargs):
    """Writes each mutant to `path`, tries it, and reports the kind."""
    outcomes = []
    for name, data in mutants:
        with open(path, "wb") as f:
            f.write(data)
        outcomes.append((name, *attempt(path, target, **kwargs)))
    report(kind, outcomes)


# --- alexnet-import's files ---------------------------------------------------------------


def test_caffemodel_and_mean_files(tmp_path):
    path = str(tmp_path / "fuzzed.caffemodel")
    full = caffemodel_bytes(random_alexnet(seed=3), v1=False)
    # The valid file first: it loads, and sets what the reader may use beyond the file's size.
    mutants = [("valid", full)] + byte_mutants(full, SEED, CASES["caffemodel (bvlc_alexnet-sized)"]
                                              - 1, head=4096)
    measured = reset_peak()
    assert measured or sys.platform != "linux", "cannot reset the peak RSS mark"
    worst, outcomes = 0.0, []
    for name, data in mutants:
        with open(path, "wb") as f:
            f.write(data)
        size_mb = len(data) / 2 ** 20
        del data
        before, _ = memory_mb()
        reset_peak()
        outcomes.append((name, *attempt(path, caffe.load)))
        _, peak = memory_mb()
        worst = max(worst, (peak - before) - 2 * size_mb)
        if name == "valid":
            print(f"\nfuzz: reading the valid {size_mb:.0f} MB caffemodel took "
                  f"{peak - before:.0f} MB")
    del mutants, full
    assert outcomes[0][1] == "succeeded", outcomes[0]
    report("caffemodel (bvlc_alexnet-sized)", outcomes)
    print(f"fuzz: the caffemodel reader's worst case: 2x the file size {worst:+.0f} MB")
    assert not measured or worst <= CAFFE_MEMORY_SLACK_MB, \
        f"the caffemodel reader used {worst:.0f} MB beyond 2x the file size"

    small = caffemodel_bytes({name: (np.ones((2, 1, 1, 1), np.float32), np.ones(2, np.float32))
                              for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6",
                                           "fc7", "fc8")}, v1=False)
    run_cases("caffemodel (small blobs)", byte_mutants(small, SEED + 1,
                                                       CASES["caffemodel (small blobs)"]),
              path, caffe.load)

    mean = mean_bytes(np.random.default_rng(0).uniform(0, 255, (3, 256, 256)).astype(np.float32))
    run_cases("mean .binaryproto", byte_mutants(mean, SEED + 2, CASES["mean .binaryproto"],
                                                head=64),
              str(tmp_path / "fuzzed.binaryproto"), caffe.read_mean)


# --- A run's files ----------------------------------------------------------------------------


def write_run(folder, class_names=("circle", "square", "triangle")):
    rng = np.random.default_rng(0)
    stats = dataset_stats.Stats(rng.uniform(0, 255, (256, 256, 3)).astype(np.float32),
                                np.array([120.0, 110.0, 100.0], np.float32),
                                np.array([0.2, 0.02, 0.005], np.float32),
                                np.eye(3, dtype=np.float32), 80)
    config = TrainConfig(model_dir=str(folder), batch_size=8, by_precision=(("float32", "epochs",
                                                                             2),),
                         model=ModelConfig(devices="none"))
    RunDir(str(folder)).write(Run(config, list(class_names)), stats)
    return RunDir(str(folder))


def read_run(run_dir):
    """What a tool does with a run's files before its network: the settings (their types and
    values are checked: test_config), the normalisation of an image, a PCA colour offset."""
    normalise = run_dir.normalization(run_dir.read())
    image = normalise(normalise.image_256(tf.zeros([300, 400, 3], tf.uint8)))
    assert image.shape == (256, 256, 3) and np.isfinite(image.numpy()).all()
    offset = normalise.pca_offset(tf.constant([1, 2], tf.int64))
    assert np.isfinite(offset.numpy()).all()


def test_run_config_and_statistics(tmp_path):
    run_dir = write_run(tmp_path / "run")
    read_run(run_dir)                                  # the valid files read
    for kind, name, seed, json_cases in (("run_config.json", RUN_CONFIG, 10, 30),
                                         ("statistics (json)", dataset_stats.STATS_FILE, 20, 20),
                                         ("statistics (mean image .npy)",
                                          dataset_stats.MEAN_IMAGE_FILE, 30, 0)):
        path = os.path.join(run_dir.path, name)
        valid = open(path, "rb").read()
        mutants = byte_mutants(valid, SEED + seed, CASES[kind] - json_cases, head=256)
        if json_cases:
            mutants += json_mutants(json.loads(valid), SEED + seed + 1, json_cases)
        run_cases(kind, mutants, path, lambda _: read_run(run_dir))
        with open(path, "wb") as f:
            f.write(valid)


def test_scan_cache_never_changes_the_answer(tmp_path):
    root = tmp_path / "folder"
    for name, colour in (("red", (200, 0, 0)), ("blue", (0, 0, 200))):
        (root / "train" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 30), colour).save(root / "train" / name / f"{i}.png")
    (root / "train" / "red" / "broken.png").write_bytes(b"not a png")
    source = sources.FolderSource(str(root))
    assert (source.num_examples("train"), source.skipped["train"]) == (6, 1)
    path = os.path.join(source.stats_dir, "manifest-train.json")
    valid = open(path, "rb").read()
    mutants = (byte_mutants(valid, SEED + 40, 16, head=512)
               + json_mutants(json.loads(valid), SEED + 41, 20))

    def scan(_):
        fresh = sources.FolderSource(str(root))
        found = (fresh.num_examples("train"), fresh.skipped["train"])
        assert found == (6, 1), f"the scan found {found} after the cache was damaged"
    run_cases("scan cache", mutants, path, scan)


def test_checkpoint_index(tmp_path):
    model = tf.keras.Sequential([tf.keras.Input((8,)), tf.keras.layers.Dense(16),
                                 tf.keras.layers.Dense(3)])
    saved = [w.numpy() for w in model.weights]
    pristine = tmp_path / "pristine"
    step, epoch = state.counters()
    state.checkpoint_of(model, step, epoch).save(str(pristine / "ckpt"))
    index = open(pristine / "ckpt-1.index", "rb").read()
    run = tmp_path / "run"

    def restore(_):
        path = RunDir(str(run)).checkpoint("latest", warn=lambda line: None)
        for w in model.weights:
            w.assign(tf.zeros_like(w))
        state.restore_weights(model, path)
        for w, value in zip(model.weights, saved):     # read back whole, or refused
            assert_equal(w.numpy(), value)

    run.mkdir()
    shutil.copytree(pristine, run, dirs_exist_ok=True)
    restore(None)                                      # the valid index restores
    outcomes = []
    for name, data in byte_mutants(index, SEED + 50, CASES["checkpoint index"], head=256):
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(pristine, run)
        (run / "ckpt-1.index").write_bytes(data)
        outcomes.append((name, *attempt(str(run / "ckpt-1.index"), restore)))
    report("checkpoint index", outcomes)


def test_a_checkpoint_without_every_weight_is_refused(tmp_path):
    """What makes a restore whole (`restore_model` builds with zeros and restores): a
    checkpoint that lacks one of the model's weights is refused in one line."""
    def dense_model(*widths):
        return tf.keras.Sequential([tf.keras.Input((8,))] +
                                   [tf.keras.layers.Dense(w) for w in widths])
    step, epoch = state.counters()
    state.checkpoint_of(dense_model(16, 3), step, epoch).save(str(tmp_path / "ckpt"))
    path = str(tmp_path / "ckpt-1")
    state.restore_weights(dense_model(16, 3), path)
    with pytest.raises(RunDirError, match=r"^checkpoint .*ckpt-1 does not hold this network's "
                                          r"weights \(.*\); pass another checkpoint$"):
        state.restore_weights(dense_model(16, 3, 3), path)


# --- Images ---------------------------------------------------------------------------------


def image_mutants(folder):
    """Valid JPEG, PNG, GIF and BMP files, each mutated 16 ways, in `folder`."""
    rng = np.random.default_rng(0)
    pixels = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    paths = []
    for i, (fmt, ext) in enumerate((("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif"),
                                    ("BMP", "bmp"))):
        valid = folder / f"valid.{ext}"
        pixels.save(valid, format=fmt)
        data = valid.read_bytes()
        valid.unlink()
        for j, (_, mutant) in enumerate(byte_mutants(data, SEED + 60 + i, 16, head=128)):
            path = folder / f"{fmt.lower()}-{j}.{ext}"
            path.write_bytes(mutant)
            paths.append(str(path))
    assert len(paths) == CASES["images (predict, load_image, folder scan)"]
    return paths


def test_images_for_predict_load_image_and_the_folder_scan(tmp_path):
    root = tmp_path / "folder"
    (root / "train" / "things").mkdir(parents=True)
    paths = image_mutants(root / "train" / "things")

    # alexnet-predict: one line per file, a result or an error naming it; no traceback, no log.
    run_dir = write_run(tmp_path / "run")
    network = build_model(run_dir)
    step, epoch = state.counters()
    state.checkpoint_of(network, step, epoch).save(os.path.join(run_dir.path, "ckpt"))
    result = subprocess.run([sys.executable, "-m", "alexnet_tf.cli.predict",
                             f"--model_dir={run_dir.path}", "--json=-", *paths], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors_by_file = {}
    for line in result.stderr.splitlines():
        assert line.startswith("alexnet-predict: error: "), f"an unexpected line: {line!r}"
        name = line[len("alexnet-predict: error: "):].split(": ", 1)[0]
        assert name in paths, line
        errors_by_file[name] = line
    results = json.loads(result.stdout)
    assert [r["image"] for r in results] == paths
    for r in results:
        assert ("error" in r) == (r["image"] in errors_by_file), r
    assert result.returncode == (1 if errors_by_file else 0)

    # The Python API: an image or a one-line ValueError naming the file.
    report("images (predict, load_image, folder scan)", [
        (path, *attempt(path, lambda p: applications.load_image(p, weights=None),
                        allowed=ValueError)) for path in paths])

    # The folder scan: every file kept or skipped, none fails the scan; predict agrees.
    source = sources.FolderSource(str(root))
    with time_limit(120):
        kept = source.num_examples("train")
    assert kept + source.skipped["train"] == len(paths)
    assert kept == len(paths) - len(errors_by_file), (kept, len(errors_by_file))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
