"""The Python API on one Keras backend, in a process of its own (`test_backends.py` runs this file
with `KERAS_BACKEND` set to jax, then torch; not collected by the suite itself).

References: the numpy Caffe of `caffe_reference` (its outputs computed by the parent and passed
in a file), numpy formulas for LRN and the paper's update rule, and the files the earlier
backends of the same run wrote (a `.keras` model, `load_image`'s pixels). With
ALEXNET_TF_BLOCK_TENSORFLOW=1, `import tensorflow` fails in this process: the API must not need it.
"""

import os
import sys

if os.environ.get("ALEXNET_TF_BLOCK_TENSORFLOW") == "1":
    sys.modules["tensorflow"] = None           # `import tensorflow` raises ImportError

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import alexnet_tf  # noqa: E402
from alexnet_tf import errors  # noqa: E402
from alexnet_tf.model.layers import LocalResponseNormalization  # noqa: E402
from caffe_reference import crop, log_softmax  # noqa: E402

BACKEND = keras.backend.backend()
SHARED = os.environ.get("ALEXNET_TF_BACKEND_SHARED", "")
# Caffe's published per-channel means, B, G, R, typed here (as in test_applications.py).
CAFFE_MEAN_RGB = np.array([122.679, 116.669, 104.007], np.float32)
BACKENDS = ("tensorflow", "jax", "torch")       # the order test_backends.py runs them in


@pytest.fixture(scope="module")
def files():
    if not SHARED:
        pytest.skip("run by tests/test_backends.py (ALEXNET_TF_BACKEND_SHARED names its files)")
    with np.load(os.path.join(SHARED, "reference.npz")) as saved:
        reference = {key: saved[key] for key in saved.files}
    return dict(caffemodel=os.path.join(SHARED, "random.caffemodel"), reference=reference)


@pytest.fixture(scope="module")
def model(files):
    return alexnet_tf.AlexNet(weights=files["caffemodel"])


def test_the_keras_backend_is_the_one_asked_for_and_tensorflow_stays_out():
    assert BACKEND == os.environ["KERAS_BACKEND"]
    if BACKEND != "tensorflow":
        assert sys.modules.get("tensorflow") is None, "tensorflow was imported"


def test_caffemodel_weights_compute_caffes_forward_pass(files, model):
    reference = files["reference"]
    x = alexnet_tf.preprocess_input(crop(reference["image"])[None])
    probabilities = model.predict(x, verbose=0)[0]
    expected = log_softmax(reference["fc8"])
    assert np.ptp(expected) > 1                                        # not a flat softmax
    np.testing.assert_allclose(np.log(probabilities), expected, atol=2e-3)
    fc7 = alexnet_tf.fc7_model(model).predict(x, verbose=0)[0]
    np.testing.assert_allclose(fc7, reference["fc7"], rtol=1e-4, atol=1e-4 * np.abs(
        reference["fc7"]).max())
    top = alexnet_tf.decode_predictions(probabilities[None], top=1)[0][0]
    assert top[0] == reference["top_synset"]


def test_include_top_pooling_and_classes(files):
    reference = files["reference"]
    x = alexnet_tf.preprocess_input(crop(reference["image"])[None])
    pool5 = reference["pool5"]                                          # C, H, W
    features = alexnet_tf.AlexNet(weights=files["caffemodel"], include_top=False)
    assert features.output_shape == (None, 6, 6, 256)
    scale = np.abs(pool5).max()
    np.testing.assert_allclose(features.predict(x, verbose=0)[0], pool5.transpose(1, 2, 0),
                               rtol=1e-4, atol=1e-4 * scale)
    for pooling, reduce in (("avg", np.mean), ("max", np.max)):
        pooled = alexnet_tf.AlexNet(weights=files["caffemodel"], include_top=False,
                                    pooling=pooling)
        np.testing.assert_allclose(pooled.predict(x, verbose=0)[0], reduce(pool5, axis=(1, 2)),
                                   rtol=1e-4, atol=1e-4 * scale)
    with pytest.warns(UserWarning, match="fc8 is new, with 10 outputs"):
        ten = alexnet_tf.AlexNet(weights=files["caffemodel"], classes=10,
                                 classifier_activation=None)
    assert ten.output_shape == (None, 10)
    logits = alexnet_tf.AlexNet(weights=files["caffemodel"], classifier_activation=None)
    np.testing.assert_allclose(logits.predict(x, verbose=0)[0], reference["fc8"], rtol=1e-4,
                               atol=1e-3)


def test_preprocess_input_keeps_the_backends_tensor(files):
    image = files["reference"]["image"][:227, :227]
    expected = image.astype(np.float32) - CAFFE_MEAN_RGB
    np.testing.assert_allclose(alexnet_tf.preprocess_input(image), expected, atol=1e-4)
    tensor = alexnet_tf.preprocess_input(keras.ops.convert_to_tensor(image))
    assert keras.ops.is_tensor(tensor)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(tensor), expected, atol=1e-4)


def numpy_lrn(a, n, k, alpha, beta):
    """Section 3.3 of the paper, summed channel by channel."""
    channels = a.shape[-1]
    out = np.empty_like(a)
    for i in range(channels):
        low, high = max(0, i - n // 2), min(channels - 1, i + n // 2)
        out[..., i] = a[..., i] / (k + alpha * (a[..., low:high + 1] ** 2).sum(-1)) ** beta
    return out


def test_lrn_on_this_backend_is_the_papers_formula():
    a = np.random.default_rng(1).normal(size=(2, 3, 3, 12)).astype(np.float32) * 3
    for k, alpha, beta in ((2.0, 1e-4, 0.75), (1.0, 0.3, 0.6)):
        layer = LocalResponseNormalization(n=5, k=k, alpha=alpha, beta=beta)
        got = keras.ops.convert_to_numpy(layer(a))
        np.testing.assert_allclose(got, numpy_lrn(a.astype(np.float64), 5, k, alpha, beta),
                                   rtol=1e-5, atol=1e-6)
    if BACKEND != "tensorflow":
        assert layer.resolved_implementation() == "ops"


def paper_update(w, v, g, lr, momentum, decay, decayed):
    """Section 5 of the paper: v <- momentum v - decay lr w - lr g;  w <- w + v."""
    v = momentum * v - (decay * lr * w if decayed else 0.0) - lr * g
    return w + v, v


def test_fit_with_paper_sgd_makes_the_papers_update():
    """Three steps of `fit` on a linear model with a squared loss, whose gradient numpy computes:
    the kernel decays inside the momentum, the bias does not."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 4)).astype(np.float32)
    y = rng.normal(size=(8, 3)).astype(np.float32)
    kernel0 = rng.normal(size=(4, 3)).astype(np.float32)
    bias0 = rng.normal(size=(3,)).astype(np.float32)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(inputs))
    model.get_layer("fc").set_weights([kernel0, bias0])
    lr, momentum, decay = 0.05, 0.9, 0.01
    model.compile(optimizer=alexnet_tf.PaperSGD(lr, momentum=momentum, weight_decay=decay),
                  loss="mean_squared_error")
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    w, b = kernel0.astype(np.float64), bias0.astype(np.float64)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    for _ in range(3):
        error = x @ w + b - y                       # d/d(out) of mean((out - y)^2)
        grad_out = 2 * error / error.size
        w, vw = paper_update(w, vw, x.T @ grad_out, lr, momentum, decay, True)
        b, vb = paper_update(b, vb, grad_out.sum(0), lr, momentum, decay, False)
    got_w, got_b = model.get_layer("fc").get_weights()
    np.testing.assert_allclose(got_w, w, atol=1e-6)
    np.testing.assert_allclose(got_b, b, atol=1e-6)


def test_mixed_bfloat16_agrees_with_float32(files, model):
    x = alexnet_tf.preprocess_input(crop(files["reference"]["image"])[None])
    expected = model.predict(x, verbose=0)[0]
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = alexnet_tf.AlexNet(weights=files["caffemodel"])
        assert mixed.get_layer("conv1_a").compute_dtype == "bfloat16"
        got = mixed.predict(x, verbose=0)[0]
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert got.dtype == np.float32
    assert int(np.argmax(got)) == int(np.argmax(expected))
    assert np.abs(got - expected).max() < 0.05


def test_keras_files_of_the_earlier_backends_load_with_the_same_outputs(files, model):
    """Each backend saves its model; the later ones load every earlier one's file."""
    x = alexnet_tf.preprocess_input(crop(files["reference"]["image"])[None])
    mine = model.predict(x, verbose=0)
    for earlier in BACKENDS[:BACKENDS.index(BACKEND)]:
        path = os.path.join(SHARED, f"{earlier}.keras")
        if earlier != "tensorflow" and not os.path.exists(path):
            continue                                   # that backend's case was not run
        assert os.path.exists(path), f"{earlier} saved no model"
        loaded = keras.models.load_model(path)
        np.testing.assert_allclose(loaded.predict(x, verbose=0), np.load(path + ".npy"),
                                   atol=1e-5)
        np.testing.assert_allclose(loaded.predict(x, verbose=0), mine, atol=1e-5)
    model.save(os.path.join(SHARED, f"{BACKEND}.keras"))
    np.save(os.path.join(SHARED, f"{BACKEND}.keras.npy"), mine)


def load_images(folder):
    """`load_image` of the two test images, with Caffe's and the paper's resize: {name: pixels}."""
    return {f"{name}-{weights}": alexnet_tf.load_image(os.path.join(folder, name), weights=weights)
            for name in ("photo.jpg", "wide.png") for weights in ("bvlc_alexnet", None)}


def test_load_image_gives_tensorflows_pixels_within_a_few_levels(files):
    """TensorFlow's `load_image` (the tools' decoding and resizing, saved by test_backends.py)
    is the reference; the other backends compute theirs with Pillow and keras.ops."""
    if BACKEND == "tensorflow":
        pytest.skip("TensorFlow's pixels are the reference")
    got = load_images(SHARED)
    with np.load(os.path.join(SHARED, "load_image.npz")) as reference:
        for key, pixels in got.items():
            assert pixels.shape == reference[key].shape, key
            difference = np.abs(pixels - reference[key])
            # PNG decodes the same everywhere: the resize alone, equal. JPEG: TensorFlow's
            # decoder runs libjpeg's fast integer IDCT, Pillow the accurate one (measured on
            # this photo: 3 levels at most, 0.96 on average).
            worst, average = (1e-3, 1e-4) if key.startswith("wide.png") else (4.0, 1.5)
            assert difference.max() <= worst and difference.mean() <= average, (
                key, difference.max(), difference.mean())
    for name, message in (("empty.jpg", "is an empty file, not an image"),
                          ("text.jpg", "not a JPEG, PNG, GIF or BMP image")):
        with pytest.raises(ValueError, match=message) as error:
            alexnet_tf.load_image(os.path.join(SHARED, name))
        assert "\n" not in str(error.value)


def test_a_run_directory_is_refused_in_one_line_off_tensorflow(tmp_path):
    if BACKEND == "tensorflow":
        pytest.skip("a run's checkpoint loads on TensorFlow (test_applications.py)")
    with pytest.raises(ValueError, match="loads with KERAS_BACKEND=tensorflow") as error:
        alexnet_tf.AlexNet(weights=str(tmp_path))
    assert "\n" not in str(error.value)
    with pytest.raises(errors.ConfigError, match="need the TensorFlow backend"):
        alexnet_tf.build_alexnet(10, devices=("/CPU:0", "/CPU:1"))
    # 60,965,224 less fc8 at 1000 classes (4096 x 1000 + 1000) plus fc8 at 10 (4096 x 10 + 10).
    assert alexnet_tf.build_alexnet(10, devices="auto").count_params() == 56_909_194
