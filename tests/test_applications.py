"""The Python API (`alexnet_tf.AlexNet` & co.) against a numpy Caffe, hand counts and Keras itself.

The pretrained path uses a bvlc_alexnet-shaped caffemodel of random weights
written by `caffe_reference` (nothing shared with the reader); downloads come
from an HTTP server on 127.0.0.1 only.
"""

import ast
import functools
import hashlib
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
from alexnet_tf import hardware, paper
from alexnet_tf.data import imagenet, sources
from alexnet_tf.model import caffe, weights as published
from alexnet_tf.training.import_caffe import import_caffemodel
from caffe_reference import assert_close, bvlc_test_case, caffe_layers, crop, log_softmax
from helpers import REPO, free_ports, tiny_run

# Caffe's published per-channel means, B, G, R (its ilsvrc_2012_mean.npy averaged), typed here.
CAFFE_MEAN_RGB = np.array([122.679, 116.669, 104.007], np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("applications")
    case = bvlc_test_case(folder)
    with open(case["caffemodel"], "rb") as f:
        sha1 = hashlib.sha1(f.read()).hexdigest()
    return dict(case, sha1=sha1, folder=folder)


@pytest.fixture(scope="module")
def model(files):
    return alexnet_tf.AlexNet(weights=files["caffemodel"])


def test_caffemodel_weights_compute_caffes_forward_pass(files, model):
    x = alexnet_tf.preprocess_input(crop(files["image"])[None])
    probabilities = model.predict(x, verbose=0)[0]
    expected = log_softmax(files["reference"]["fc8"])
    assert np.ptp(expected) > 1                                        # not a flat softmax
    np.testing.assert_allclose(np.log(probabilities), expected, atol=2e-3)
    features = alexnet_tf.AlexNet(weights=files["caffemodel"], include_top=False)
    assert features.output_shape == (None, 6, 6, 256)
    pool5 = features.predict(x, verbose=0)[0]
    assert_close(pool5, files["reference"]["pool5"].transpose(1, 2, 0))   # C,H,W -> H,W,C
    fc7 = alexnet_tf.fc7_model(model).predict(x, verbose=0)[0]
    assert_close(fc7, files["reference"]["fc7"])
    top = alexnet_tf.decode_predictions(probabilities[None], top=1)[0][0]
    assert top[0] == imagenet.synsets()[int(np.argmax(files["reference"]["fc8"]))]


def test_preprocess_input_subtracts_caffes_channel_means_in_rgb(files):
    image = files["image"][:227, :227]
    expected = image.astype(np.float32) - CAFFE_MEAN_RGB
    np.testing.assert_allclose(alexnet_tf.preprocess_input(image), expected, atol=1e-4)
    as_tensor = alexnet_tf.preprocess_input(tf.constant(image))
    assert isinstance(as_tensor, tf.Tensor)
    np.testing.assert_allclose(as_tensor.numpy(), expected, atol=1e-4)
    # weights=None: an untrained network has no statistics; the pixels as they are.
    np.testing.assert_array_equal(alexnet_tf.preprocess_input(image, weights=None),
                                  image.astype(np.float32))


def test_a_run_directory_brings_its_network_and_mean_image(files, model, tmp_path):
    rng = np.random.default_rng(5)
    mean_bgr = rng.uniform(90, 130, (3, 256, 256)).astype(np.float32)
    from caffe_reference import mean_bytes
    mean_path = str(tmp_path / "mean.binaryproto")
    with open(mean_path, "wb") as f:
        f.write(mean_bytes(mean_bgr))
    run_dir = str(tmp_path / "imported")
    import_caffemodel(files["caffemodel"], run_dir, mean=mean_path, log=lambda line: None)
    image = crop(files["image"])
    mean_rgb = crop(mean_bgr[::-1].transpose(1, 2, 0))               # the mean image's centre 227
    x = alexnet_tf.preprocess_input(image[None], weights=run_dir)
    np.testing.assert_allclose(x[0], image - mean_rgb, atol=1e-4)
    from_run = alexnet_tf.AlexNet(weights=run_dir)
    assert from_run.input_shape == (None, 227, 227, 3)
    expected = log_softmax(caffe_layers(files["weights"], files["image"], mean_bgr)["fc8"])
    np.testing.assert_allclose(np.log(from_run.predict(x, verbose=0)[0]), expected, atol=2e-3)


def test_parameter_count_is_figure_2s_counted_by_hand():
    def conv(k, inputs, outputs, towers=2):
        return towers * (k * k * inputs * outputs + outputs)

    def dense(inputs, outputs, towers=2):
        return towers * (inputs * outputs + outputs)

    by_hand = (conv(11, 3, 48) + conv(5, 48, 128) + conv(3, 256, 192) + conv(3, 192, 192)
               + conv(3, 192, 128) + dense(6 * 6 * 256, 2048) + dense(4096, 2048)
               + dense(4096, 1000, towers=1))
    model = alexnet_tf.AlexNet(weights=None)
    assert by_hand == paper.PARAMS_TWO_TOWERS and model.count_params() == by_hand
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 1000)
    pooled = alexnet_tf.AlexNet(include_top=False, pooling="max")
    assert pooled.output_shape == (None, 256)


def test_global_pooling_of_pool5(files):
    x = alexnet_tf.preprocess_input(crop(files["image"])[None])
    pool5 = files["reference"]["pool5"]                                 # C, H, W
    for pooling, reduce in (("avg", np.mean), ("max", np.max)):
        model = alexnet_tf.AlexNet(weights=files["caffemodel"], include_top=False, pooling=pooling)
        assert_close(model.predict(x, verbose=0)[0], reduce(pool5, axis=(1, 2)))


def test_other_classes_get_a_fresh_fc8_and_keep_the_rest(files, model):
    with pytest.warns(UserWarning, match="fc8 is new, with 10 outputs"):
        ten = alexnet_tf.AlexNet(weights=files["caffemodel"], classes=10,
                                 classifier_activation=None)
    assert ten.output_shape == (None, 10)
    assert ten.get_layer("fc8").get_weights()[0].shape == (4096, 10)
    w1 = files["weights"]["conv1"][0]                                   # (out, in BGR, h, w)
    kernel = np.concatenate([ten.get_layer(n).get_weights()[0] for n in ("conv1_a", "conv1_b")], -1)
    np.testing.assert_array_equal(kernel, w1[:, ::-1].transpose(2, 3, 1, 0))
    logits = alexnet_tf.AlexNet(weights=files["caffemodel"], classifier_activation=None)
    x = alexnet_tf.preprocess_input(crop(files["image"])[None])
    np.testing.assert_allclose(logits.predict(x, verbose=0)[0], files["reference"]["fc8"],
                               rtol=1e-4, atol=1e-3)


def test_bad_arguments_are_refused_in_one_line(files):
    cases = [dict(weights="imagenet"), dict(pooling="mean"), dict(input_shape=(224, 224, 3),
             weights=files["caffemodel"]), dict(weights=files["caffemodel"],
             classifier_activation="sigmoid")]
    for kwargs in cases:
        with pytest.raises(ValueError) as error:
            alexnet_tf.AlexNet(**kwargs)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="shape"):
        alexnet_tf.decode_predictions(np.zeros((2, 10)))


def test_saved_as_keras_and_exported_it_predicts_the_same(files, model, tmp_path):
    x = alexnet_tf.preprocess_input(crop(files["image"])[None])
    expected = model.predict(x, verbose=0)
    path = str(tmp_path / "alexnet.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)
    model.export(str(tmp_path / "saved"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "saved"))     # kept: it owns the variables
    np.testing.assert_allclose(reloaded.serve(tf.constant(x)).numpy(), expected, atol=1e-6)
    h5 = str(tmp_path / "alexnet.weights.h5")
    model.save_weights(h5)
    np.testing.assert_allclose(alexnet_tf.AlexNet(weights=h5).predict(x, verbose=0), expected,
                               atol=1e-6)


def test_fit_fine_tunes_fc8_with_the_papers_optimizer(files, tmp_path):
    with pytest.warns(UserWarning):
        model = alexnet_tf.AlexNet(weights=files["caffemodel"], classes=2)
    for layer in model.layers:
        layer.trainable = layer.name == "fc8"
        if layer.name.startswith("dropout"):
            layer.rate = 0.0                  # the same features in fit and evaluate
    rng = np.random.default_rng(6)
    x = alexnet_tf.preprocess_input(rng.integers(0, 256, (8, 227, 227, 3)))
    y = np.array([0, 1] * 4)
    # A stable step for a softmax layer on these (random-weight, large) fc7 features.
    fc7 = alexnet_tf.fc7_model(model).predict(x, verbose=0)
    model.compile(optimizer=alexnet_tf.PaperSGD(float(0.02 / np.mean(np.sum(fc7 ** 2, 1)))),
                  loss="sparse_categorical_crossentropy")
    conv5 = model.get_layer("conv5_b").get_weights()[0].copy()
    fc8 = model.get_layer("fc8").get_weights()[0].copy()
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=3, batch_size=4, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before
    assert model.trainable_weights == model.get_layer("fc8").trainable_weights
    np.testing.assert_array_equal(model.get_layer("conv5_b").get_weights()[0], conv5)
    assert np.abs(model.get_layer("fc8").get_weights()[0] - fc8).max() > 0
    path = str(tmp_path / "tuned.keras")
    model.save(path)
    assert isinstance(keras.models.load_model(path).optimizer, alexnet_tf.PaperSGD)


def test_mixed_precision_policy_agrees_with_float32(files, model):
    x = alexnet_tf.preprocess_input(crop(files["image"])[None])
    expected = model.predict(x, verbose=0)[0]
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = alexnet_tf.AlexNet(weights=files["caffemodel"])
        assert mixed.get_layer("conv1_a").compute_dtype == "bfloat16"
        assert mixed.get_layer("conv1_a").kernel.dtype == "float32"
        got = mixed.predict(x, verbose=0)[0]
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert got.dtype == np.float32
    assert int(np.argmax(got)) == int(np.argmax(expected))
    assert np.abs(got - expected).max() <= hardware.tolerance("probability", "float32", "bfloat16")


def test_load_image_resizes_and_crops_as_the_weights_were_evaluated(tmp_path):
    rng = np.random.default_rng(7)
    square = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    path = str(tmp_path / "square.png")
    tf.io.write_file(path, tf.io.encode_png(square))
    np.testing.assert_allclose(alexnet_tf.load_image(path), crop(square), atol=1e-3)   # squash: 256
    wide = rng.integers(0, 256, (256, 300, 3), dtype=np.uint8)
    path = str(tmp_path / "wide.png")
    tf.io.write_file(path, tf.io.encode_png(wide))
    # The paper's: shorter side already 256, the central 256 columns start at 22, then 224 at 16.
    np.testing.assert_allclose(alexnet_tf.load_image(path, weights=None),
                               wide[16:240, 22 + 16:22 + 16 + 224], atol=1e-3)
    assert alexnet_tf.load_image(path).shape == (227, 227, 3)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    for name, message in (("empty.jpg", "is an empty file, not an image"), ("text.jpg", "not a JPEG"),
                          ("missing.jpg", "cannot read")):
        with pytest.raises(ValueError, match=message) as error:
            alexnet_tf.load_image(str(tmp_path / name))
        assert "\n" not in str(error.value)


def test_decode_predictions_keras_format():
    preds = np.zeros((2, 1000), np.float32)
    preds[0, [281, 285, 3]] = [0.5, 0.3, 0.2]
    preds[1, 999] = 1.0
    decoded = alexnet_tf.decode_predictions(preds, top=3)
    assert decoded[0] == [("n02123045", "tabby", 0.5), ("n02124075", "Egyptian_cat",
                                                        pytest.approx(0.3)),
                          ("n01491361", "tiger_shark", pytest.approx(0.2))]
    assert decoded[1][0][:2] == ("n15075141", "toilet_tissue")


def test_public_api_is_listed():
    public = {"AlexNet", "preprocess_input", "load_image", "decode_predictions", "fc7_model",
              "PaperSGD", "LocalResponseNormalization", "build_alexnet", "grad_cam"}
    assert set(alexnet_tf.__all__) == public and public <= set(dir(alexnet_tf))
    assert all(callable(getattr(alexnet_tf, name)) for name in public)


# --- Fetching the published weights, from a server on 127.0.0.1 -----------------------------


class _Server:
    """Serves a folder on 127.0.0.1 and counts the requests."""

    def __init__(self, folder):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(files):
    running = _Server(files["folder"])
    yield running
    running.close()


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def cache_files(home):
    """The files in the Keras cache's models/ (Keras itself writes keras.json beside it)."""
    return sorted(str(p.relative_to(home)) for p in (home / "models").rglob("*") if p.is_file())


def test_fetch_downloads_checks_and_caches(files, server, keras_home, capsys):
    url = f"{server.url}/random.caffemodel"
    path = published.fetch_caffemodel(url, sha1=files["sha1"])
    assert "Downloading data from" in capsys.readouterr().out                # Keras' progress
    assert path == str(keras_home / "models" / "bvlc_alexnet.caffemodel")
    assert open(path, "rb").read() == open(files["caffemodel"], "rb").read()
    server.close()                                                             # offline now
    assert published.fetch_caffemodel(url, sha1=files["sha1"]) == path


def test_a_wrong_file_or_a_dead_server_is_refused_and_leaves_nothing(files, server, keras_home):
    url = f"{server.url}/random.caffemodel"
    with pytest.raises(published.WeightsError) as error:
        published.fetch_caffemodel(url)                                        # published sha1
    message = str(error.value)
    assert len(message.splitlines()) <= 3 and caffe.PUBLISHED_SHA1 in message
    assert files["sha1"] in message and "weights='/path/bvlc_alexnet.caffemodel'" in message
    assert cache_files(keras_home) == []
    dead = f"http://127.0.0.1:{free_ports(1)[0]}/bvlc_alexnet.caffemodel"
    with pytest.raises(published.WeightsError, match="could not download") as error:
        published.fetch_caffemodel(dead, sha1=files["sha1"])
    assert len(str(error.value).splitlines()) <= 3 and cache_files(keras_home) == []


def test_bvlc_alexnet_is_fetched_converted_cached_and_loaded_offline(
        files, model, server, keras_home, monkeypatch):
    monkeypatch.setenv(published.URL_VARIABLE, f"{server.url}/random.caffemodel")
    monkeypatch.setattr(caffe, "PUBLISHED_SHA1", files["sha1"])   # the test file stands for it
    x = alexnet_tf.preprocess_input(crop(files["image"])[None])
    first = alexnet_tf.AlexNet(weights="bvlc_alexnet").predict(x, verbose=0)
    assert cache_files(keras_home) == ["models/bvlc_alexnet.caffemodel",
                                       "models/bvlc_alexnet.weights.h5"]
    server.close()
    second = alexnet_tf.AlexNet(weights="bvlc_alexnet").predict(x, verbose=0)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(second, model.predict(x, verbose=0), atol=1e-6)


def test_nothing_downloads_unless_asked(files, tmp_path, monkeypatch, keras_home):
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    alexnet_tf.AlexNet(weights=None, include_top=False)
    alexnet_tf.preprocess_input(np.zeros((227, 227, 3)))
    path = str(tmp_path / "a.png")
    tf.io.write_file(path, tf.io.encode_png(np.zeros((300, 300, 3), np.uint8)))
    alexnet_tf.load_image(path)
    alexnet_tf.decode_predictions(np.ones((1, 1000)))
    assert cache_files(keras_home) == []


def test_import_cli_without_a_caffemodel_fetches_and_refuses_a_wrong_file(files, server,
                                                                          tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_HOME=str(tmp_path / "home"),
               **{published.URL_VARIABLE: f"{server.url}/random.caffemodel"})
    result = subprocess.run([sys.executable, "-m", "alexnet_tf.cli.import_caffe",
                             f"--model_dir={tmp_path / 'run'}"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines()
              if line.startswith("alexnet-import: error: ")]
    assert len(errors) == 1 and "sha1" in errors[0] and caffe.PUBLISHED_SHA1 in result.stderr
    assert not (tmp_path / "run").exists() and cache_files(tmp_path / "home") == []


# --- The README's example ---------------------------------------------------------------------


def readme_example(marker="python-api"):
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    found = re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```", text, re.S)
    assert found, f"README.md has no ```python block after <!-- {marker} -->"
    return found.group(1)


def test_readme_python_example_runs(files, tmp_path):
    """The README's example, with the cache holding the test file's converted weights."""
    from alexnet_tf.applications import _write_h5
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    _write_h5(files["caffemodel"], str(home / "models" / "bvlc_alexnet.weights.h5"))
    rng = np.random.default_rng(8)
    for name in ("elephant.jpg", "cat.jpg", "dog.jpg"):
        pixels = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        tf.io.write_file(str(tmp_path / name), tf.io.encode_jpeg(pixels))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_HOME=str(home),
               **{published.URL_VARIABLE: "http://127.0.0.1:9/unreachable"})
    result = subprocess.run([sys.executable, "-c", readme_example()], cwd=str(tmp_path), env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"\('n\d{8}', '[^']+', ", result.stdout), result.stdout
    assert "(2, 4096)" in result.stdout


def test_readmes_offline_example_runs_as_written_on_a_run(tiny_data_dir, tmp_path):
    """The README's second example, exactly as written, where runs/quickstart is a run of the
    built-in dataset and shape.png one of its validation images; no network (none is asked)."""
    tiny_run(str(tmp_path / "runs" / "quickstart"), tiny_data_dir)
    source = sources.open_source("alexnet_shapes/tiny", tiny_data_dir)
    encoded, _ = next(source.encoded("validation").as_numpy_iterator())
    (tmp_path / "shape.png").write_bytes(encoded)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_HOME=str(tmp_path / "home"),
               **{published.URL_VARIABLE: "http://127.0.0.1:9/unreachable"})
    result = subprocess.run([sys.executable, "-c", readme_example("python-api-offline")],
                            cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    top = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    assert len(top) == 3 and [s for _, _, s in top] == sorted((s for _, _, s in top), reverse=True)
    assert all(class_id == name and name in source.class_names for class_id, name, _ in top), top
    assert not (tmp_path / "home" / "models").exists()      # nothing fetched, nothing cached


def test_a_runs_defaults_follow_its_weights(tiny_data_dir, tmp_path):
    """AlexNet(weights=RUN) has the run's classes without a warning; decode_predictions names
    them given the model or the run; weights=None gives the paper's 224 input, as it is."""
    run = tiny_run(str(tmp_path / "run"), tiny_data_dir)
    names = sources.open_source("alexnet_shapes/tiny", tiny_data_dir).class_names
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # no "fc8 is new" warning
        model = alexnet_tf.AlexNet(weights=run)
    assert model.output_shape == (None, len(names)) and list(model.class_names) == names
    preds = np.eye(len(names), dtype=np.float32)[[3, 0]]
    for weights in (model, run):
        decoded = alexnet_tf.decode_predictions(preds, top=1, weights=weights)
        assert decoded == [[(names[3], names[3], 1.0)], [(names[0], names[0], 1.0)]]
    with pytest.raises(ValueError, match=r"\(samples, 1000\).*pass weights=its model"):
        alexnet_tf.decode_predictions(preds)
    image = np.arange(256 * 256 * 3, dtype=np.uint8).reshape(256, 256, 3)
    path = str(tmp_path / "a.png")
    tf.io.write_file(path, tf.io.encode_png(image))
    loaded = alexnet_tf.load_image(path, weights=None)
    assert loaded.shape == (224, 224, 3)
    np.testing.assert_array_equal(alexnet_tf.preprocess_input(loaded[None], weights=None)[0],
                                  image[16:240, 16:240].astype(np.float32))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
