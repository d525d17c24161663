"""Atomic writes, interrupted for real: a write that fails after part of its data.

Each writer runs in a child process whose file-size limit (RLIMIT_FSIZE) is
below what it writes, so the operating system stops the write partway, the way
a full disk or a crash would, whatever the code does. Afterwards the file that
was there must be byte-identical and no partial file may sit under its name.
A write in place (no temporary file, no rename) fails these tests.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from alexnet_tf import files
from alexnet_tf.data import dataset_stats
from helpers import REPO

PRELUDE = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # the write fails with EFBIG instead
"""


def run_limited(code, limit_bytes, cwd):
    """Runs `code` in a child process that may write no file larger than `limit_bytes`."""
    script = PRELUDE + textwrap.dedent(code).replace(
        "LIMIT()", f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, "
                   "resource.RLIM_INFINITY))")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-c", script], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=300)


def snapshot(folder):
    """{name: bytes} of every file in `folder`."""
    return {name: open(os.path.join(folder, name), "rb").read()
            for name in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, name))}


def assert_interrupted_and_unchanged(result, before, folder):
    assert result.returncode != 0 or "interrupted" in result.stdout, result.stderr[-2000:]
    after = snapshot(folder)
    assert after == before, "a file changed: " + ", ".join(
        name for name in set(before) | set(after) if before.get(name) != after.get(name))


def small_stats(seed):
    rng = np.random.default_rng(seed)
    return dataset_stats.Stats(
        mean_image=rng.uniform(0, 255, (256, 256, 3)).astype(np.float32),
        mean_channel=rng.uniform(0, 255, 3).astype(np.float32),
        eigenvalues=np.array([0.2, 0.02, 0.004], np.float32),
        eigenvectors=np.eye(3, dtype=np.float32), num_images=10)


# name: (what the child writes over the folder's files, its file-size limit in bytes)
CASES = {
    "bytes": ("files.atomic_write(FOLDER + '/result.json', b'new' * 10_000)", 4096),
    "json": ("files.atomic_write_json(FOLDER + '/result.json', {'values': list(range(10_000))})",
             4096),
    "statistics": ("dataset_stats.save_stats(small_stats(1), FOLDER)", 100_000),
    "run files": ("RunDir(FOLDER).write(Run(TrainConfig(model_dir=FOLDER, epochs=7), "
                  "['a', 'b', 'c'] * 100), small_stats(1))", 1000),
}


def test_interrupted_writes_keep_the_previous_files(tmp_path):
    """Run files, statistics and JSON: each write stopped partway by the file-size limit."""
    from alexnet_tf.config import TrainConfig
    from alexnet_tf.training.rundir import Run, RunDir
    folders, before = {}, {}
    for name in CASES:
        folder = tmp_path / name.replace(" ", "_")
        folder.mkdir()
        if name in ("bytes", "json"):
            (folder / "result.json").write_bytes(json.dumps({"previous": True}).encode())
        elif name == "statistics":
            dataset_stats.save_stats(small_stats(0), str(folder))
        else:
            RunDir(str(folder)).write(Run(TrainConfig(model_dir=str(folder)), ["a", "b"]),
                                      small_stats(0))
        folders[name], before[name] = str(folder), snapshot(folder)
    cases = "".join(f"""
        FOLDER = {folders[name]!r}
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
        try:
            {call}
            print("{name}: written")
        except OSError as error:
            print("{name}: interrupted", error.errno)
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        """ for name, (call, limit) in CASES.items())
    result = run_limited(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.join(REPO, 'tests')!r})
        from alexnet_tf import files
        from alexnet_tf.data import dataset_stats
        from alexnet_tf.config import TrainConfig
        from alexnet_tf.training.rundir import Run, RunDir
        from test_atomic_writes import small_stats
        """) + textwrap.dedent(cases), 10**12, tmp_path)
    for name in CASES:
        assert f"{name}: interrupted" in result.stdout, (name, result.stdout, result.stderr[-2000:])
        assert snapshot(folders[name]) == before[name], f"{name}: a file changed"
    assert dataset_stats.load_stats(folders["statistics"]).num_images == 10


def test_an_interrupted_scan_cache_keeps_the_previous_one(tmp_path):
    """An image folder's scan cache (manifest) is rewritten when the folder changes."""
    import tensorflow as tf

    from alexnet_tf.data import sources
    root = tmp_path / "photos"
    for split in ("train", "validation"):
        for index, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True)
            pixels = np.full((8, 8, 3), 60 * index, np.uint8)
            tf.io.write_file(str(folder / "0.png"), tf.io.encode_png(pixels))
    source = sources.open_source(f"image_folder:{root}")
    source.num_examples("train")
    cache = source.stats_dir
    manifests = [n for n in os.listdir(cache) if n.startswith("manifest-")]
    assert manifests, os.listdir(cache)
    before = snapshot(cache)
    tf.io.write_file(str(root / "train" / "cat" / "1.png"),              # the listing changes
                     tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)))
    result = run_limited(f"""
        from alexnet_tf.data import sources
        source = sources.open_source("image_folder:{root}")
        LIMIT()
        source.num_examples("train")
        print("interrupted: scanned", source.num_examples("train"))
        """, 100, tmp_path)
    assert "interrupted: scanned 3" in result.stdout, result.stderr[-2000:]
    assert_interrupted_and_unchanged(result, before, cache)


def test_nothing_partial_is_left_by_an_interrupted_staged_directory(tmp_path):
    """What exports and imports are written through: the final folder appears whole or not."""
    result = run_limited(f"""
        import os
        from alexnet_tf import files
        LIMIT()
        try:
            with files.staged_directory({str(tmp_path / 'export' / '1')!r}, 1e6) as folder:
                open(os.path.join(folder, "small"), "wb").write(b"x" * 10)
                open(os.path.join(folder, "variables"), "wb").write(b"x" * 100_000)
        except OSError as error:
            print("interrupted", error.errno)
        """, 4096, tmp_path)
    assert "interrupted" in result.stdout, result.stderr[-2000:]
    assert os.listdir(tmp_path / "export") == []


def test_the_temporary_name_is_what_a_crash_leaves_and_what_runs_clean_up(tmp_path):
    """A write killed before its rename leaves only a `.tmp-` file, which `RunDir` removes."""
    from alexnet_tf.training.rundir import RunDir
    path = tmp_path / "run_config.json"
    path.write_text("{}")
    result = run_limited(f"""
        import os
        from alexnet_tf import files
        os.replace = lambda *args: os.kill(os.getpid(), 9)     # killed just before the rename
        files.atomic_write({str(path)!r}, b'{{"new": 1}}')
        """.replace("LIMIT()", ""), 10**9, tmp_path)
    assert result.returncode == -9
    assert path.read_text() == "{}"
    left = [n for n in os.listdir(tmp_path) if n.startswith(files.TEMPORARY_PREFIX)]
    assert len(left) == 1
    assert RunDir(str(tmp_path)).remove_temporaries()[0] == 1
    assert os.listdir(tmp_path) == ["run_config.json"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
