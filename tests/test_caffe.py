"""alexnet-import: bvlc_alexnet-shaped caffemodels (random weights) against a numpy Caffe.

The caffemodels and the numpy Caffe are `caffe_reference`'s (nothing shared
with the reader).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.data import imagenet, preprocessing
from alexnet_tf.model import caffe
from alexnet_tf.serving import export
from alexnet_tf.training.import_caffe import import_caffemodel
from alexnet_tf.training.restore import restore_model
from alexnet_tf.training.rundir import RunDir
from caffe_reference import (POOL_PARAMS, assert_close, caffe_forward, caffemodel_bytes,
                             conv_params, float32, layer, mean_bytes, number, random_alexnet,
                             text)
from helpers import cli, refusal

# --- Fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("caffe")
    weights = random_alexnet(seed=1)
    rng = np.random.default_rng(2)
    paths = {}
    for layout in ("V1", "V2"):
        paths[layout] = str(folder / f"alexnet_{layout}.caffemodel")
        with open(paths[layout], "wb") as f:
            f.write(caffemodel_bytes(weights, v1=layout == "V1"))
    mean = (rng.uniform(90, 130, (3, 256, 256))).astype(np.float32)
    paths["mean"] = str(folder / "imagenet_mean.binaryproto")
    with open(paths["mean"], "wb") as f:
        f.write(mean_bytes(mean))
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    paths["image"] = str(folder / "image.png")
    tf.io.write_file(paths["image"], tf.io.encode_png(image))
    return dict(paths=paths, weights=weights, mean=mean, image=image, folder=folder)


# --- Numbers --------------------------------------------------------------------------------


def test_imported_v1_model_computes_caffes_forward_pass(files, tmp_path):
    model_dir = str(tmp_path / "imported")
    run = import_caffemodel(files["paths"]["V1"], model_dir, mean=files["paths"]["mean"],
                            log=lambda line: None)
    assert run.class_names == imagenet.synsets()
    model, run, _ = restore_model(model_dir, "best")
    normalization = RunDir(model_dir).normalization(run)
    image = tf.constant(files["image"])
    crop = preprocessing.centre_crop(normalization(normalization.image_256(image)), 227)[None]
    logits = model(crop, training=False).numpy()[0]
    fc7 = export.feature_extractor(model)(crop, training=False).numpy()[0]
    expected_fc7, expected_logits = caffe_forward(files["weights"], files["image"], files["mean"])
    assert np.abs(expected_logits).max() > 1 and (expected_fc7 > 0).mean() > 0.1   # not vanishing
    assert_close(fc7, expected_fc7)
    assert_close(logits, expected_logits)


def test_cli_import_of_the_v2_layout_exports_a_savedmodel_that_tensorflow_alone_serves(
        files, tmp_path):
    model_dir, export_base = str(tmp_path / "bvlc_alexnet"), str(tmp_path / "exports")
    result = cli("import_caffe", f"--caffemodel={files['paths']['V2']}", f"--model_dir={model_dir}")
    assert result.returncode == 0, result.stderr
    assert "V2 layout" in result.stdout and "not the published" in result.stdout
    stored = json.load(open(os.path.join(model_dir, "run_config.json")))
    assert stored["runtime"]["imported"]["sha1"] in result.stdout
    result = cli("export", f"--model_dir={model_dir}", f"--export_base={export_base}")
    assert result.returncode == 0, result.stderr
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        "m = tf.saved_model.load(sys.argv[1])\n"
        "png = tf.io.read_file(sys.argv[2])[None]\n"
        "p = m.signatures['serving_default'](image_bytes=png)['probabilities'].numpy()[0]\n"
        "f = m.signatures['features'](image_bytes=png)['features'].numpy()[0]\n"
        "np.savez(sys.argv[3], probabilities=p, features=f)\n")
    out = str(tmp_path / "served.npz")
    served = subprocess.run([sys.executable, "-c", script, os.path.join(export_base, "1"),
                             files["paths"]["image"], out], cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert served.returncode == 0, served.stderr
    # No --mean: Caffe's per-channel BGR means everywhere.
    mean = np.broadcast_to(np.asarray(caffe.CAFFE_BGR_MEAN, np.float64)[:, None, None],
                           (3, 256, 256))
    fc7, logits = caffe_forward(files["weights"], files["image"], mean)
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    got = np.load(out)
    assert_close(got["features"], fc7)
    assert_close(got["probabilities"], probabilities)


# --- Bad input: one line, nothing written ---------------------------------------------------


def _truncated(files, tmp_path):
    path = str(tmp_path / "truncated.caffemodel")
    with open(files["paths"]["V2"], "rb") as src, open(path, "wb") as dst:
        dst.write(src.read(os.path.getsize(files["paths"]["V2"]) // 2))
    return path


def _not_alexnet(files, tmp_path):
    """bvlc_reference_caffenet's order (pool1 before norm1): differs at the 3rd layer."""
    weights = files["weights"]
    body = text(1, "CaffeNet") + layer(False, "conv1", "Convolution", conv_params(96, 11, 4),
                                       weights["conv1"])
    body += layer(False, "relu1", "ReLU") + layer(False, "pool1", "Pooling", POOL_PARAMS)
    path = str(tmp_path / "caffenet.caffemodel")
    open(path, "wb").write(body)
    return path


def _wrong_mean(files, tmp_path):
    path = str(tmp_path / "mean_227.binaryproto")
    open(path, "wb").write(mean_bytes(np.zeros((3, 227, 227), np.float32)))
    return path


def _png(files, tmp_path):
    return files["paths"]["image"]


@pytest.mark.parametrize("make, flag, message", [
    (_png, "caffemodel", "is not a caffemodel"),
    (_truncated, "caffemodel", "is truncated"),
    (_not_alexnet, "caffemodel", "is not bvlc_alexnet: layer 'pool1' (Pooling) where "
                                 "bvlc_alexnet has LRN 'norm1'"),
    (_wrong_mean, "mean", "is a 1x3x227x227 mean; bvlc_alexnet's is 1x3x256x256"),
])
def test_bad_input_gets_one_line_and_leaves_nothing(make, flag, message, files, tmp_path):
    bad = make(files, tmp_path)
    args = {"caffemodel": files["paths"]["V1"], "mean": files["paths"]["mean"], flag: bad}
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(caffe.CaffeError) as raised:
        import_caffemodel(args["caffemodel"], str(out / "run"), mean=args["mean"],
                          log=lambda line: None)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert os.listdir(out) == []


def test_wrong_shape_blob_is_named(files, tmp_path):
    weights = dict(files["weights"])
    w2, b2 = weights["conv2"]
    weights["conv2"] = (np.zeros((256, 96, 5, 5), np.float32), b2)   # ungrouped
    path = str(tmp_path / "ungrouped.caffemodel")
    open(path, "wb").write(caffemodel_bytes(weights, v1=False, until=6))
    net = caffe.read_caffemodel(path)
    with pytest.raises(caffe.CaffeError, match=r"'conv2'.* has weights 256x96x5x5, bvlc_alexnet "
                                               r"256x48x5x5"):
        caffe.alexnet_weights(net, path)


def test_cli_refuses_bad_input_in_one_line(files, tmp_path):
    model_dir = tmp_path / "run"
    result = refusal("import_caffe", f"--caffemodel={files['paths']['mean']}",
                     f"--model_dir={model_dir}")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("alexnet-import: error:")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not model_dir.exists() and os.listdir(tmp_path) == []


def test_unpacked_floats_read_too():
    values = np.arange(6, dtype=np.float32)
    unpacked = b"".join(float32(5, v) for v in values)
    data = number(1, 1) + number(2, 1) + number(3, 2) + number(4, 3) + unpacked
    message = caffe._CLASSES["BlobProto"].FromString(data)
    np.testing.assert_array_equal(caffe._blob(message, "blob"), values.reshape(1, 1, 2, 3))


def test_shipped_classes_are_tfds_imagenet2012_labels_in_order():
    import tensorflow_datasets as tfds
    labels = os.path.join(os.path.dirname(tfds.__file__), "datasets", "imagenet2012", "labels.txt")
    assert imagenet.synsets() == open(labels).read().split()
    assert imagenet.synsets() == sorted(imagenet.synsets())      # Caffe's synsets.txt order
    assert imagenet.describe("n02123045") == "tabby, tabby cat"
    assert imagenet.names()[0] == "tench, Tinca tinca"
