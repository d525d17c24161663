"""The README walked as a new user walks it (issue #35): its "One example each" commands, read
from README.md and run in its order, on a 100-step run of the quick start, in a folder of their
own, each exiting 0 or with the refusal the README documents.

Opt-in, as it takes about ten minutes on two cores: `pytest tests/test_readme.py --walkthrough`
(`.ci/run` runs it after the suite). The deploy extra must be installed (the int8 export).

Where a command would run for hours (the study, the full benchmark), the walk appends the flags
that make it short (`SHORTER`), which the README's flags allow: later flags override earlier ones.
"""

import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from helpers import NATIVE_LOG, REPO, cli, command_env, free_ports

README = os.path.join(REPO, "README.md")
BIN = os.path.dirname(sys.executable)

# The quick start as the README runs it, cut short as the README says how: 100 steps, so that
# an int8 file usually agrees with the SavedModel on the 98% of top-1 classes an export requires
# (98.6% on AMX; after 30 steps, 96%: the barely trained network's near-ties flip).
QUICK_START = "alexnet-train --flagfile=flags/quickstart.cfg --max_steps=100"

# What a command may answer instead of exiting 0, as the docs say (first words, exit status,
# words of its one line): an int8 file below that agreement is set aside, nothing exported.
MAY_REFUSE = {
    "alexnet-export --model_dir=runs/quickstart --format=onnx --quantize=int8":
        (1, "agrees with the SavedModel on"),
}

# Appended to a README command (by its first words) so that the walk stays minutes long.
SHORTER = {
    "alexnet-study": ["--preset=smoke", "--only=baseline"],
    "alexnet-benchmark": ["--quick"],
}

# Commands the README documents as refused on a machine without ImageNet or a network:
# (first words, the exit status, words of the first line, at most this many lines). The offline
# import names, under its one-line error, the published sha1 and the manual way (README, "Python
# API": "at most three lines").
REFUSED = {
    "alexnet-train --flagfile=flags/paper.cfg": (1, "imagenet2012", 1),
    "alexnet-import": (1, "could not download bvlc_alexnet.caffemodel", 3),
}


def readme_examples():
    """The commands of the README's "One example each" block, in its order (comments dropped)."""
    text = open(README, encoding="utf-8").read()
    assert "One example each:" in text, "README.md has no 'One example each:' block"
    block = text.split("One example each:", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def stderr_lines(text):
    import re
    return [line for line in text.splitlines() if line.strip() and not re.match(NATIVE_LOG, line)]


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """A user's folder: the repository's flagfiles, two images, a home and TFDS folder of its
    own, and no network (the published weights' address is a closed port on 127.0.0.1)."""
    import numpy as np
    import tensorflow as tf
    folder = tmp_path_factory.mktemp("walk")
    os.symlink(os.path.join(REPO, "flags"), folder / "flags")
    rng = np.random.default_rng(0)
    for name in ("cat.jpg", "q.jpg"):
        image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
        (folder / name).write_bytes(tf.io.encode_jpeg(image).numpy())
    closed, = free_ports(1)
    env = command_env()
    env.update(HOME=str(folder / "home"), KERAS_HOME=str(folder / "home" / ".keras"),
               TFDS_DATA_DIR=str(folder / "tensorflow_datasets"),
               ALEXNET_TF_WEIGHTS_URL=f"http://127.0.0.1:{closed}/bvlc_alexnet.caffemodel",
               PATH=BIN + os.pathsep + env.get("PATH", ""))
    os.makedirs(env["HOME"])
    return folder, env


def run(argv, walk, timeout=1500):
    folder, env = walk
    started = time.monotonic()
    done = subprocess.run(argv, cwd=str(folder), env=env, capture_output=True, text=True,
                          timeout=timeout)
    print(f"{time.monotonic() - started:6.0f} s  exit {done.returncode}  {shlex.join(argv)}")
    return done


def serve_tensorboard(argv, walk):
    """`tensorboard --logdir=...` serves until stopped: it must answer on 127.0.0.1."""
    folder, env = walk
    port, = free_ports(1)
    server = subprocess.Popen(argv + ["--host=127.0.0.1", f"--port={port}"], cwd=str(folder),
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5) as r:
                    return r.status, r.read().decode()
            except OSError:
                if server.poll() is not None:
                    return server.returncode, server.stderr.read()
                time.sleep(1)
        return None, "no answer in 120 s"
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:        # a loaded machine: it may not stop in time
            server.kill()
            server.wait(timeout=30)


@pytest.mark.walkthrough
@pytest.mark.timeout(2400)
def test_the_readme_walked_in_its_order(walk):
    folder, _ = walk
    done = run(shlex.split(QUICK_START), walk)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (folder / "runs" / "quickstart" / "run_config.json").exists()

    examples = readme_examples()
    assert [a[0] for a in examples][:2] == ["alexnet-train", "alexnet-eval"], examples
    failures, refusals = [], []
    for argv in examples:
        words = " ".join(argv[:2])
        if argv[0] == "tensorboard":
            status, body = serve_tensorboard(argv, walk)
            if status != 200 or "train" not in body or "validation" not in body:
                failures.append(f"{shlex.join(argv)}: {status} {body[-300:]}")
            continue
        done = run(argv + SHORTER.get(argv[0], []), walk)
        refused = next((v for k, v in REFUSED.items() if words.startswith(k) or argv[0] == k), None)
        lines = stderr_lines(done.stderr)
        if refused:
            status, words_in_line, most = refused
            if (done.returncode != status or not 1 <= len(lines) <= most
                    or not lines[0].startswith(f"{argv[0]}: error: ")
                    or words_in_line not in lines[0]):
                failures.append(f"{shlex.join(argv)}: exit {done.returncode}, expected {status} "
                                f"and at most {most} lines naming {words_in_line!r}: {lines[-5:]}")
        elif done.returncode != 0:
            allowed = MAY_REFUSE.get(shlex.join(argv))
            if not (allowed and done.returncode == allowed[0] and len(lines) == 1
                    and allowed[1] in lines[0]):
                failures.append(f"{shlex.join(argv)}: exit {done.returncode}: {lines[-5:]}")
            refusals.append(shlex.join(argv))
    assert not failures, "\n".join(failures)

    # What the README's comments promise of the commands' results.
    assert not (folder / "runs" / "paper").exists()            # a refused start leaves nothing
    versions = folder / "savedmodel" / "alexnet"
    if refusals:                       # the int8 file set aside: only version 1 is served
        assert sorted(os.listdir(versions)) == ["1", "rejected"], refusals
    else:
        assert sorted(os.listdir(versions)) == ["1", "2"]
        assert {"saved_model.pb", "alexnet_int8.onnx"} <= set(os.listdir(versions / "2"))
    assert {"conv1_kernels.png", "predictions.png", "gradcam.png"} <= set(
        os.listdir(folder / "figures"))
    assert (folder / "runs" / "quickstart" / "fc7_index.npz").exists()
    assert (folder / "bench.json").exists() and (folder / "retrieval.png").exists()
    cache = folder / "home" / ".keras" / "models"          # nothing fetched or cached (the
    assert not (cache.exists() and any(cache.iterdir()))  # refused import may leave it empty)


def test_the_one_gpu_network_has_the_parameters_the_readme_says(tmp_path):
    """The README's comment on `alexnet-summary --towers=1 --half_width --num_classes=1000`."""
    argv = next(a for a in readme_examples() if a[0] == "alexnet-summary" and "--half_width" in a)
    line = next(line for line in open(README, encoding="utf-8") if shlex.join(argv) in line)
    stated = line.split("network:")[1].split("parameters")[0].strip()
    done = cli("summary", *argv[1:], cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert stated in done.stdout, (stated, done.stdout[-1500:])
