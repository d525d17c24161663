"""The Python API on every Keras backend: tests/backend_cases.py in a process per backend.

TensorFlow's own cases are test_applications.py's, in this process; here TensorFlow writes what
the other backends compare with (its `.keras` file and outputs, its `load_image` pixels), and
JAX and PyTorch each run backend_cases.py in a process of their own, where `import tensorflow`
fails (the API must not need it there). The references are written here once: a
bvlc_alexnet-shaped caffemodel of random weights and the numpy Caffe forward pass of
`caffe_reference`, and image files for `load_image`.
"""

import importlib.util
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import alexnet_tf
import backend_cases
from alexnet_tf.data import imagenet
from caffe_reference import bvlc_test_case, crop
from helpers import REPO

OTHERS = ("jax", "torch")                # after TensorFlow, in backend_cases.BACKENDS' order


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backends")
    case = bvlc_test_case(folder)
    layers = case["reference"]
    np.savez(folder / "reference.npz", image=case["image"], fc8=layers["fc8"], fc7=layers["fc7"],
             pool5=layers["pool5"], top_synset=imagenet.synsets()[int(np.argmax(layers["fc8"]))])
    rng = np.random.default_rng(4)
    # A smooth photo-like JPEG (shrunk more than 2x by the paper's resize: antialiased) and a
    # noisy PNG whose shorter side is already 256.
    rows, cols = np.mgrid[0:600, 0:800]
    photo = np.stack([(rows * 0.4) % 256, (cols * 0.3) % 256, (rows + cols) * 0.15 % 256], -1)
    buffer = io.BytesIO()
    Image.fromarray(photo.astype(np.uint8)).save(buffer, "JPEG", quality=90)
    (folder / "photo.jpg").write_bytes(buffer.getvalue())
    Image.fromarray(rng.integers(0, 256, (256, 300, 3), dtype=np.uint8)).save(folder / "wide.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    # TensorFlow's side: what the other backends compare with.
    model = alexnet_tf.AlexNet(weights=str(folder / "random.caffemodel"))
    x = alexnet_tf.preprocess_input(crop(case["image"])[None])
    model.save(folder / "tensorflow.keras")
    np.save(folder / "tensorflow.keras.npy", model.predict(x, verbose=0))
    np.savez(folder / "load_image.npz", **backend_cases.load_images(str(folder)))
    return folder


@pytest.mark.parametrize("backend", OTHERS)
def test_the_python_api_runs_on_the_backend_without_tensorflow(backend, shared):
    assert importlib.util.find_spec(backend), f"{backend} is not installed: pip install -e " \
                                              f"'.[test]' (or '.[{backend}]')"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(KERAS_BACKEND=backend, ALEXNET_TF_BACKEND_SHARED=str(shared),
               ALEXNET_TF_BLOCK_TENSORFLOW="1")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/backend_cases.py", "-q", "--noconftest",
         "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning", "--durations=5"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    summary = done.stdout.strip().splitlines()[-1:] or ["(no output)"]
    assert done.returncode == 0, f"{backend}: {summary[0]}\n{done.stdout[-6000:]}" \
                                 f"\n{done.stderr[-2000:]}"
    assert "passed" in summary[0] and "skipped" not in summary[0], f"{backend}: {summary[0]}"
