"""alexnet-import: bvlc_alexnet-shaped caffemodels (random weights) against a numpy Caffe.

The caffemodels are written here with a protobuf wire-format writer of the
test's own (varints, keys, packed floats: nothing shared with the reader), in
Caffe's V1 layout (`layers`, field 2) and its newer one (`layer`, field 100).
The reference is Caffe's forward pass in numpy (float64): BGR input minus the
mean image, the centre 227 crop, grouped convolutions, LRN across all channels
with alpha / n and k = 1, ceil-mode max pooling, C,H,W flattening before fc6.
"""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import caffe, export, imagenet, preprocessing
from alexnet_tf.import_caffe import import_caffemodel
from alexnet_tf.rundir import RunDir
from helpers import cli

# --- A protobuf writer of the test's own --------------------------------------------------


def varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def key(field, wire):
    return varint(field << 3 | wire)


def delimited(field, payload):
    return key(field, 2) + varint(len(payload)) + payload


def number(field, value):
    return key(field, 0) + varint(value)


def float32(field, value):
    return key(field, 5) + struct.pack("<f", value)


def text(field, value):
    return delimited(field, value.encode())


def blob(array, v1):
    data = delimited(5, np.ascontiguousarray(array, "<f4").tobytes())
    if v1:        # num, channels, height, width: fc weights (1, 1, out, in), biases (1, 1, 1, n)
        dims = (1,) * (4 - array.ndim) + array.shape
        return b"".join(number(f, d) for f, d in zip((1, 2, 3, 4), dims)) + data
    shape = delimited(1, b"".join(varint(d) for d in array.shape))       # packed int64
    return delimited(7, shape) + data


# Caffe's field numbers: (V1, V2) for the layer's name, type, blobs and each *_param.
V1_TYPE = {"Data": 5, "Convolution": 4, "ReLU": 18, "LRN": 15, "Pooling": 17,
           "InnerProduct": 14, "Dropout": 6, "Accuracy": 1, "SoftmaxWithLoss": 21}
PARAM_FIELD = {"Convolution": (10, 106), "InnerProduct": (17, 117), "LRN": (18, 118),
               "Pooling": (19, 121)}


def layer(v1, name, kind, params=b"", blobs=(), bottom="x", top="x"):
    if v1:
        body = delimited(2, bottom.encode()) + delimited(3, top.encode()) + text(4, name)
        body += number(5, V1_TYPE[kind]) + b"".join(delimited(6, blob(b, True)) for b in blobs)
    else:
        body = text(1, name) + text(2, kind) + delimited(3, bottom.encode())
        body += delimited(4, top.encode()) + b"".join(delimited(7, blob(b, False)) for b in blobs)
    if params:
        body += delimited(PARAM_FIELD[kind][0 if v1 else 1], params)
    return delimited(2 if v1 else 100, body)


def conv_params(num_output, kernel, stride=1, pad=0, group=1):
    out = number(1, num_output) + (number(3, pad) if pad else b"") + number(4, kernel)
    return out + (number(5, group) if group > 1 else b"") + (number(6, stride) if stride > 1 else b"")


LRN_PARAMS = number(1, 5) + float32(2, 1e-4) + float32(3, 0.75)
POOL_PARAMS = number(1, 0) + number(2, 3) + number(3, 2)
CONVS = [("conv1", 96, 3, 11, 4, 0, 1), ("conv2", 256, 96, 5, 1, 2, 2),
         ("conv3", 384, 256, 3, 1, 1, 1), ("conv4", 384, 384, 3, 1, 1, 2),
         ("conv5", 256, 384, 3, 1, 1, 2)]
FCS = [("fc6", 4096, 9216), ("fc7", 4096, 4096), ("fc8", 1000, 4096)]


def random_alexnet(seed):
    """bvlc_alexnet's weights, random (He-scaled so activations neither vanish nor explode)."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, out, inputs, k, _, _, group in CONVS:
        fan_in = inputs // group * k * k
        weights[name] = (rng.standard_normal((out, inputs // group, k, k), np.float32)
                         * np.float32(np.sqrt(2 / fan_in)),
                         rng.standard_normal(out, np.float32) * np.float32(0.1))
    for name, out, inputs in FCS:
        weights[name] = (rng.standard_normal((out, inputs), np.float32)
                         * np.float32(np.sqrt(2 / inputs)),
                         rng.standard_normal(out, np.float32) * np.float32(0.1))
    return weights


def caffemodel_bytes(weights, v1, until=None):
    """A bvlc_alexnet train_val net (data layer, loss and accuracy included) as a caffemodel."""
    conv = {name: conv_params(out, k, s, p, g) for name, out, _, k, s, p, g in CONVS}
    path = [("data", "Data", b""), ("conv1", "Convolution", conv["conv1"]), ("relu1", "ReLU", b""),
            ("norm1", "LRN", LRN_PARAMS), ("pool1", "Pooling", POOL_PARAMS),
            ("conv2", "Convolution", conv["conv2"]), ("relu2", "ReLU", b""),
            ("norm2", "LRN", LRN_PARAMS), ("pool2", "Pooling", POOL_PARAMS),
            ("conv3", "Convolution", conv["conv3"]), ("relu3", "ReLU", b""),
            ("conv4", "Convolution", conv["conv4"]), ("relu4", "ReLU", b""),
            ("conv5", "Convolution", conv["conv5"]), ("relu5", "ReLU", b""),
            ("pool5", "Pooling", POOL_PARAMS)]
    for name, out, _ in FCS:
        path.append((name, "InnerProduct", number(1, out)))
        if name != "fc8":
            path += [(f"relu{name[2]}", "ReLU", b""), (f"drop{name[2]}", "Dropout", b"")]
    path += [("accuracy", "Accuracy", b""), ("loss", "SoftmaxWithLoss", b"")]
    body = text(1, "AlexNet")
    for name, kind, params in path[:until]:
        blobs = weights[name] if name in weights else ()
        body += layer(v1, name, kind, params, blobs)
    return body


def mean_bytes(mean_bgr_chw):
    """A .binaryproto mean (a BlobProto, 1x3x256x256, as Caffe's compute_image_mean writes)."""
    return blob(mean_bgr_chw[None], v1=True)


# --- Caffe's forward pass in numpy --------------------------------------------------------


def conv(x, w, b, stride, pad, group):
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    cin, cout = x.shape[0] // group, w.shape[0] // group
    outs = [np.tensordot(w[g * cout:(g + 1) * cout], windows[g * cin:(g + 1) * cin],
                         axes=([1, 2, 3], [0, 3, 4])) for g in range(group)]
    return np.concatenate(outs) + b[:, None, None]


def lrn(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
    padded = np.pad(x ** 2, ((size // 2, size // 2), (0, 0), (0, 0)))
    window = sum(padded[i:i + x.shape[0]] for i in range(size))
    return x * (k + alpha / size * window) ** -beta


def max_pool_ceil(x, size=3, stride=2):
    height = x.shape[1]
    out = -(-(height - size) // stride) + 1
    y = np.empty((x.shape[0], out, out))
    for i in range(out):
        for j in range(out):
            y[:, i, j] = x[:, i * stride:i * stride + size, j * stride:j * stride + size].max((1, 2))
    return y


def caffe_forward(weights, image_rgb, mean_bgr_chw):
    """Caffe's test-time forward pass: (fc7 after ReLU, fc8 logits), float64."""
    x = image_rgb[..., ::-1].transpose(2, 0, 1).astype(np.float64) - mean_bgr_chw  # BGR, C,H,W
    offset = (256 - 227) // 2
    x = x[:, offset:offset + 227, offset:offset + 227]
    w = {name: (a.astype(np.float64), b.astype(np.float64)) for name, (a, b) in weights.items()}
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    for name, _, _, _, stride, pad, group in CONVS:
        x = relu(conv(x, *w[name], stride, pad, group))
        if name in ("conv1", "conv2"):
            x = lrn(x)
        if name in ("conv1", "conv2", "conv5"):
            x = max_pool_ceil(x)
    x = x.reshape(-1)                                          # C, H, W order
    fc6 = relu(w["fc6"][0] @ x + w["fc6"][1])
    fc7 = relu(w["fc7"][0] @ fc6 + w["fc7"][1])
    return fc7, w["fc8"][0] @ fc7 + w["fc8"][1]


def assert_close(actual, expected, rtol=1e-4):
    """Equal to `rtol` relative to the largest magnitude (float32 against float64)."""
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


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
    model, run, _ = RunDir(model_dir).restore_model("best")
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
    result = cli("import_caffe", f"--caffemodel={files['paths']['mean']}",
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
