"""Deployment conversions on a small network (deploy.convert), checked by the runtimes themselves.

The whole AlexNet's LiteRT/ONNX files are checked in test_export.py; here a small
uint8-in network keeps the conversions fast, so that each quantization's file can be
read back and run by its own runtime (ONNX Runtime, LiteRT) against Keras.
"""

import os

import keras
import numpy as np
import pytest

from alexnet_tf.serving import deploy

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")
SIDE = deploy.INPUT_SIDE


def small_model(seed=0):
    """uint8 [B, 256, 256, 3] -> probabilities over 5 classes: the deployment's preprocessing,
    two convolutions with an LRN (the band-matrix form, as deploy_model makes it) between."""
    from alexnet_tf.model.layers import LocalResponseNormalization
    keras.utils.set_random_seed(seed)
    images = keras.Input((SIDE, SIDE, 3), dtype="uint8", name="images")
    x = deploy.DeployPreprocessing(np.full(3, 120, np.float32), np.full(3, 60, np.float32), 224,
                                   name="preprocessing")(images)
    x = keras.layers.Conv2D(16, 7, strides=4, activation="relu")(x)
    x = LocalResponseNormalization(implementation="matmul", name="lrn1")(x)
    x = keras.layers.MaxPooling2D(3, 2)(x)
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(1024, activation="relu")(x)
    outputs = keras.layers.Dense(5, activation="softmax", dtype="float32")(x)
    return keras.Model(images, outputs)


def smooth_images(count, seed):
    """uint8 images with structure (blurred noise), not white noise: what calibration expects."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (count, SIDE // 32, SIDE // 32, 3))
    return np.repeat(np.repeat(coarse, 32, 1), 32, 2).astype(np.uint8)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deploy")
    model = small_model()
    calibration, images = smooth_images(32, 1), smooth_images(24, 2)
    model.predict(images[:1], verbose=0)              # Keras exports a model it has called
    saved = str(folder / "small.keras")
    model.save(saved)
    paths = {}
    for fmt, quantize in ((deploy.ONNX, "none"), (deploy.ONNX, "int8"),
                          (deploy.LITERT, "none"), (deploy.LITERT, "int8"),
                          (deploy.LITERT, "float16"), (deploy.LITERT, "dynamic")):
        path = str(folder / deploy.file_name(fmt, quantize))
        # As the export converts (in a child process, pure-Python protobuf), but LiteRT's
        # float32, float16 and dynamic-range files in this process (the in-process path).
        if fmt == deploy.ONNX or quantize == "int8":
            deploy.convert_apart(saved, fmt, path, quantize, calibration)
        else:
            deploy.convert(model, fmt, path, quantize, calibration)
        paths[fmt, quantize] = path
    return model, images, paths


def test_onnx_int8_holds_7_bit_weights_and_runs_close_to_keras(converted):
    import onnx
    from onnx import numpy_helper
    model, images, paths = converted
    graph = onnx.load(paths[deploy.ONNX, "int8"]).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = [numpy_helper.to_array(t) for t in graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and t.dims and np.prod(t.dims) > 64]
    assert len(weights) >= 3                   # 2 convolutions, the hidden dense layer
    # In float32 (deploy.KEEP_FLOAT): the logits, whose Gemm reads float32 weights, and the
    # preprocessing and LRN, whose nodes feed no QuantizeLinear but through their last output.
    made_by = {output: node for node in graph.node for output in node.output}
    float_weights = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    softmax = next(node for node in graph.node if node.op_type == "Softmax")
    logits = made_by[softmax.input[0]]
    assert logits.op_type in ("Gemm", "MatMul") and logits.input[1] in float_weights
    for layer in ("preprocessing", "lrn1"):
        inside = [node for node in graph.node if f"/{layer}_1/" in node.name or
                  f"/{layer}/" in node.name]
        quantized = {i for node in graph.node if node.op_type == "QuantizeLinear"
                     for i in node.input if i in made_by and made_by[i] in inside}
        assert len(inside) >= 3 and len(quantized) <= 1, (layer, quantized)
    # Quantized: the convolutions and the hidden dense layer read dequantized int8 weights.
    products = [node for node in graph.node if node.op_type in ("Conv", "Gemm", "MatMul")
                and node is not logits and "lrn1" not in node.name]
    assert len(products) == 3
    assert all(made_by[node.input[1]].op_type == "DequantizeLinear" for node in products)
    # Smaller by the quantized weights (the float32 logits, LRN's band and the int8 layer's
    # int32 bias with its scales stay: 0.50 on this small network, 0.30 on AlexNet's 1000 classes).
    assert os.path.getsize(paths[deploy.ONNX, "int8"]) < 0.55 * os.path.getsize(
        paths[deploy.ONNX, "none"])
    expected = model.predict(images, verbose=0)
    found = deploy.Runner(paths[deploy.ONNX, "int8"])(images)
    assert np.abs(found - expected).max() < 0.05
    assert np.mean(found.argmax(1) == expected.argmax(1)) >= 0.9
    float32 = deploy.Runner(paths[deploy.ONNX, "none"])(images)
    np.testing.assert_allclose(float32, expected, atol=1e-5)


def litert_graph(path):
    """A LiteRT file as its interpreter reads it: each tensor's dtype and name by index, and
    its ops."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=path)
    details = interpreter.get_tensor_details()
    return ({t["index"]: t["dtype"] for t in details}, {t["index"]: t["name"] for t in details},
            interpreter._get_ops_details())


def test_litert_int8_computes_in_int8_and_runs_close_to_keras(converted):
    model, images, paths = converted
    runner = deploy.Runner(paths[deploy.LITERT, "int8"])
    dtype, name, ops = litert_graph(paths[deploy.LITERT, "int8"])
    weights = {}
    for op in ops:
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED") and "lrn1" not in name[op["outputs"][0]]:
            weights.setdefault(op["op_name"], []).append(dtype[op["inputs"][1]])
    assert weights["CONV_2D"] == [np.int8, np.int8]
    # The logits (the last dense layer) and the softmax stay float32; the hidden layer is int8.
    assert weights["FULLY_CONNECTED"] == [np.int8, np.float32]
    softmax = next(op for op in ops if op["op_name"] == "SOFTMAX")
    assert dtype[softmax["inputs"][0]] == np.float32
    # So do the preprocessing's and LRN's ops (deploy.KEEP_FLOAT): no int8 in or out.
    for layer, least in (("preprocessing", 2), ("lrn1", 4)):
        inside = [op for op in ops if f"/{layer}" in name[op["outputs"][0]]
                  and op["op_name"] not in ("QUANTIZE", "DEQUANTIZE")]
        assert len(inside) >= least, (layer, [op["op_name"] for op in inside])
        assert all(dtype[i] != np.int8 for op in inside
                   for i in [*op["inputs"], *op["outputs"]]
                   if i >= 0), layer
    expected = model.predict(images, verbose=0)
    found = np.concatenate([runner(images[i:i + 1]) for i in range(len(images))])
    assert np.abs(found - expected).max() < 0.05
    np.testing.assert_allclose(deploy.Runner(paths[deploy.LITERT, "none"])(images), expected,
                               atol=1e-5)


def test_litert_float16_and_dynamic_range_files_store_their_weights_so_and_run_close_to_keras(
        converted):
    """float16: the weights stored in float16 and dequantized to float32 before the products;
    dynamic range: the products read int8 weights (activations quantized on the fly)."""
    model, images, paths = converted
    expected = model.predict(images, verbose=0)
    for quantize, weight_type, atol in (("float16", np.float16, 2e-3), ("dynamic", np.int8, 0.05)):
        dtype, name, ops = litert_graph(paths[deploy.LITERT, quantize])
        made_by = {o: op for op in ops for o in op["outputs"]}
        products = [op for op in ops if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED")
                    and "lrn1" not in name[op["outputs"][0]]]
        assert len(products) == 4, quantize            # 2 convolutions, 2 dense layers
        stored = []
        for op in products[:3]:               # the logits' 1024 x 5 stay float32 (too small)
            weight = op["inputs"][1]
            if weight in made_by and made_by[weight]["op_name"] == "DEQUANTIZE":
                weight = made_by[weight]["inputs"][0]
            stored.append(dtype[weight])
        assert stored == [weight_type] * 3, (quantize, stored)
        found = deploy.Runner(paths[deploy.LITERT, quantize])(images)
        assert np.abs(found - expected).max() < atol, quantize
        assert np.mean(found.argmax(1) == expected.argmax(1)) >= 0.9, quantize


def test_a_quantization_a_format_lacks_is_one_line(tmp_path):
    from alexnet_tf.serving import export
    with pytest.raises(export.ExportError, match=r"^--quantize=float16 is for --format=litert "
                       r"\(not onnx: export it separately\)$"):
        export.export(str(tmp_path / "no_run"), str(tmp_path / "base"),
                      formats=("litert", "onnx"), quantize="float16")
    with pytest.raises(export.ExportError, match=r"^--quantize=int8 is for --format=litert or "
                       r"--format=onnx$"):
        export.export(str(tmp_path / "no_run"), str(tmp_path / "base"), quantize="int8")
    assert not os.path.exists(tmp_path / "base")


def test_deploy_model_leaves_the_classifier_as_it_was():
    """The deployment model uses the band-matrix LRN on a copy; the caller's model, which
    goes on serving or training, keeps its own LRN form and its weights."""
    from alexnet_tf.data import dataset_stats
    from alexnet_tf.model.layers import LocalResponseNormalization
    from alexnet_tf.model.network import build_alexnet
    classifier = build_alexnet(3, devices=None, seed=0, towers=1, half_width=True)
    lrn = [layer for layer in classifier.layers if isinstance(layer, LocalResponseNormalization)]
    for layer in lrn:
        layer.implementation = "kernel"
    stats = dataset_stats.Stats(mean_image=np.full((SIDE, SIDE, 3), 100, np.float32),
                                mean_channel=np.full(3, 100, np.float32),
                                eigenvalues=np.ones(3, np.float32),
                                eigenvectors=np.eye(3, dtype=np.float32), num_images=0)
    deployed = deploy.deploy_model(classifier, dataset_stats.Normalization(stats, "channel"))
    assert lrn and all(layer.implementation == "kernel" for layer in lrn)
    copies = [layer for layer in deployed.get_layer(classifier.name).layers
              if isinstance(layer, LocalResponseNormalization)]
    assert len(copies) == len(lrn) and all(c.implementation == "matmul" for c in copies)
    image = smooth_images(1, 3)
    x = image[:, 16:240, 16:240].astype(np.float32) - 100      # minus the mean, scale 1
    np.testing.assert_allclose(deployed.predict(image, verbose=0),
                               keras.ops.softmax(classifier.predict(x, verbose=0)), atol=1e-5)


def test_a_conversion_that_fails_in_its_process_is_one_line_and_leaves_nothing(tmp_path):
    saved = tmp_path / "small.keras"
    small_model().save(saved)
    path = tmp_path / "alexnet_int8.onnx"
    with pytest.raises(deploy.DeployError) as caught:
        deploy.convert_apart(str(saved), deploy.ONNX, str(path), "int8", None)   # no calibration
    message = str(caught.value)
    assert message.startswith("converting to onnx (int8) failed: ") and "\n" not in message
    assert os.listdir(tmp_path) == ["small.keras"]      # no file, no temporary folder
