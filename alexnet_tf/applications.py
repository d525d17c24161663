"""AlexNet as a Keras application: `AlexNet`, `preprocess_input`, `load_image`, `decode_predictions`.

The argument names and meanings are `keras.applications`'. What `weights=`
may be, and the network and preprocessing each brings:

| weights                      | network                                   | input | preprocessing                        |
|------------------------------|-------------------------------------------|-------|--------------------------------------|
| None                         | the paper's (LRN k=2 within towers)       | 224   | none: the pixels as they are (no statistics) |
| "bvlc_alexnet"               | Caffe-exact (LRN k=1 across towers, ceil) | 227   | squash to 256, minus Caffe's channel means |
| a `.caffemodel`              | Caffe-exact, its LRN/pooling as read      | 227   | as bvlc_alexnet                      |
| a `.weights.h5`              | Caffe-exact (one saved from such a model) | 227   | as bvlc_alexnet                      |
| a run directory / checkpoint | the run's options and classes             | the run's | the run's statistics and resize  |

Preprocessing belongs to the weights, so `preprocess_input` and `load_image`
take the same `weights=` argument: the mistake of ported weights fed another
network's preprocessing cannot happen by default.

Example:

    model = AlexNet(weights="bvlc_alexnet")
    image = load_image("elephant.jpg")                 # float32 [227, 227, 3], RGB 0-255
    print(decode_predictions(model.predict(preprocess_input(image[None])))[0])

Offline, with a run of alexnet-train (its network, classes, statistics and resize):

    model = AlexNet(weights="runs/quickstart")
    x = preprocess_input(load_image("a.png", weights="runs/quickstart")[None],
                         weights="runs/quickstart")
    print(decode_predictions(model.predict(x), weights=model)[0])
"""

import os
import warnings

import keras
import numpy as np
from keras import ops

from alexnet_tf import errors, paper
from alexnet_tf.config import ModelConfig, SHORTER_SIDE, SQUASH
from alexnet_tf.data import images, imagenet
from alexnet_tf.model import caffe, weights as published
from alexnet_tf.model.layers import on_tensorflow
from alexnet_tf.model.network import build_alexnet, copy_matching, feature_extractor

BVLC_ALEXNET = "bvlc_alexnet"
POOLINGS = (None, "avg", "max")
_PAPER, _PUBLISHED, _CAFFEMODEL, _H5, _RUN = "paper", "published", "caffemodel", "h5", "run"


def _kind(weights):
    """Which of the five sources `weights` names (refused in one line if none)."""
    if weights is None:
        return _PAPER
    if weights == BVLC_ALEXNET:
        return _PUBLISHED
    if isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if path.endswith(".caffemodel"):
            return _CAFFEMODEL
        if path.endswith(".h5"):
            return _H5
        if os.path.isdir(path) or os.path.exists(path + ".index"):
            return _RUN
        if not os.path.exists(path):
            raise ValueError(f"weights={path!r}: no such file or folder (pass None, "
                             f"{BVLC_ALEXNET!r}, a .caffemodel, a .weights.h5, or a run directory "
                             "or checkpoint of alexnet-train)")
    raise ValueError(f"weights must be None, {BVLC_ALEXNET!r}, a .caffemodel, a .weights.h5, or "
                     f"a run directory or checkpoint of alexnet-train; got {weights!r}")


def _run(weights):
    """The run a run directory or checkpoint names (TensorFlow's checkpoints: TensorFlow only)."""
    if not on_tensorflow():
        raise ValueError(f"weights={os.fspath(weights)!r}: a run of alexnet-train is a TensorFlow "
                         f"checkpoint and loads with KERAS_BACKEND=tensorflow (Keras runs on "
                         f"{keras.backend.backend()}); on another backend pass a .weights.h5 "
                         "saved from it on TensorFlow (model.save_weights)")
    from alexnet_tf.training.finetune import Source
    return Source.locate(os.fspath(weights), what="weights")


def _mean_and_scale(weights):
    """(mean, scale) of the weights' inputs; None for weights=None (an untrained network has
    no statistics). Caffe's: its per-channel means (RGB), scale 1."""
    kind = _kind(weights)
    if kind == _PAPER:
        return None
    if kind == _RUN:
        normalization = _run(weights).run_dir.normalization()
        stats = normalization.stats
        return stats.mean(normalization.mean_mode), stats.scale(normalization.input_scale)
    return caffe.rgb_mean(), np.ones(3, np.float32)


def _resize_and_size(weights):
    """(how images become 256x256, the input side) the weights were evaluated with."""
    kind = _kind(weights)
    if kind == _PAPER:
        return SHORTER_SIDE, paper.IMAGE_SIZE
    if kind == _RUN:
        config = _run(weights).run_dir.read().config
        return config.resize, config.image_size
    return SQUASH, caffe.IMAGE_SIZE


def _build(options, classes, initialize=True):
    """The logits model of `options` (a ModelConfig), unplaced (it saves and loads anywhere);
    `initialize=False` when every weight is loaded next (`build_alexnet`)."""
    return build_alexnet(classes, options, devices=None, initialize=initialize)


def _caffe_model(caffemodel):
    """(the Caffe-exact model with a caffemodel's weights, its ModelConfig as the file says)."""
    loaded = caffe.load(caffemodel).weights
    options = caffe.network_config(loaded.lrn_k, loaded.lrn_alpha, loaded.pool_rounding)
    model = _build(options, paper.NUM_CLASSES, initialize=False)
    caffe.assign(model, loaded)
    return model, options


def _write_h5(caffemodel, h5_path):
    """Converts a bvlc_alexnet caffemodel into the Caffe-exact model's `.weights.h5`."""
    _caffe_model(caffemodel)[0].save_weights(h5_path)


def _load_h5(model, path):
    try:
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as error:
        first = errors.first_line(error)
        raise ValueError(f"weights={path!r} does not load into the Caffe-exact AlexNet ({first}); "
                         "pass a .weights.h5 saved from AlexNet(weights='bvlc_alexnet') or a "
                         "caffemodel, or delete a damaged cache file and call again") from None


def _source_model(weights, classes):
    """(logits model with `weights` loaded, its ModelConfig, what they are, their class count)."""
    kind = _kind(weights)
    if kind == _PAPER:
        return _build(ModelConfig(), classes), ModelConfig(), "weights=None", classes
    if kind == _RUN:
        source = _run(weights)
        from alexnet_tf.training.restore import restore_model
        model, run, path = restore_model(source.run_dir, source.which)
        return model, run.config.model, path, run.num_classes
    if kind == _CAFFEMODEL:
        model, options = _caffe_model(os.fspath(weights))
        return model, options, os.fspath(weights), paper.NUM_CLASSES
    path = os.fspath(weights) if kind == _H5 else published.cached_weights(_write_h5)
    options = caffe.network_config()
    model = _build(options, paper.NUM_CLASSES, initialize=False)
    _load_h5(model, path)
    return model, options, (path if kind == _H5 else BVLC_ALEXNET), paper.NUM_CLASSES


def _with_classes(model, options, classes, description):
    """`model` with a fresh fc8 of `classes` outputs (initialised as the paper's), others copied."""
    warnings.warn(f"{description} has {model.output_shape[-1]} classes: fc8 is new, with "
                  f"{classes} outputs (N(0, 0.01), zero bias); every other layer is loaded",
                  stacklevel=3)
    fresh = _build(options, classes)
    copy_matching(model, fresh)                   # every layer but fc8, whose shape differs
    return fresh


def _pool5(model):
    """pool5's output [batch, 6, 6, 256]: tower a's 128 maps, then tower b's (Caffe's order)."""
    names = {layer.name for layer in model.layers}
    return model.get_layer("concat6_a" if "concat6_a" in names else "pool5").output


def _head(x, classifier_activation):
    if classifier_activation == "softmax":
        return keras.layers.Softmax(dtype="float32", name="probabilities")(x)
    if classifier_activation is None:
        return x
    return keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")(x)


def _check_input(input_shape, input_tensor, size):
    wanted = (size, size, 3)
    shapes = [("input_shape", tuple(input_shape))] if input_shape is not None else []
    if input_tensor is not None:
        shapes.append(("input_tensor's shape", tuple(input_tensor.shape[1:])))
    for what, shape in shapes:
        if shape != wanted:
            raise ValueError(f"{what} must be {wanted} for these weights (the network's "
                             f"fully connected layers fix its input size); got {shape}")


def AlexNet(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
            classes=None, classifier_activation="softmax", name="alexnet"):
    """Instantiates AlexNet (Krizhevsky, Sutskever & Hinton, 2012), two towers, as Keras does.

    Args:
      include_top: Whether to include fc6, fc7 and fc8. Without them the
        model ends at pool5, `[batch, 6, 6, 256]` (tower a's 128 maps, then
        tower b's: Caffe's channel order).
      weights: None (the paper's network, untrained, 224x224 input),
        "bvlc_alexnet" (the published Caffe weights, downloaded once into the
        Keras cache and sha1-checked; the Caffe-exact network, 227x227), or a
        path: a `.caffemodel`, a `.weights.h5` saved from such a model, or a
        run directory or checkpoint of alexnet-train / alexnet-import (its
        network options come with it).
      input_tensor: Optional Keras tensor to use as the model's input.
      input_shape: Optional; must be the weights' (224, 224, 3) or (227, 227, 3).
      pooling: With include_top=False: None (pool5's 4-D maps), "avg" or
        "max" (global pooling to `[batch, 256]`).
      classes: fc8's outputs. Default: the weights' own (1000 for None and
        Caffe's weights, a run's classes for a run). When they differ from the
        weights' class count, fc8 is new (the paper's initialisation) and a
        warning says so.
      classifier_activation: "softmax" (float32 probabilities), None (logits),
        or, with weights=None, any Keras activation.
      name: The model's name.

    Returns:
      A Keras functional `Model`. Its inputs are RGB images after
      `preprocess_input(x, weights)`. A run's model has its class names in
      `model.class_names` (`decode_predictions(preds, weights=model)` uses them).

    Example:

    >>> model = AlexNet(weights=None)
    >>> model.count_params()
    60965224
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of None, 'avg', 'max'; got {pooling!r}")
    if classifier_activation not in (None, "softmax") and weights is not None and include_top:
        raise ValueError("with pretrained weights classifier_activation must be None or "
                         f"'softmax'; got {classifier_activation!r}")
    if include_top and classes is not None and (not isinstance(classes, int) or classes < 1):
        raise ValueError(f"classes must be a positive integer; got {classes!r}")
    _check_input(input_shape, input_tensor, _resize_and_size(weights)[1])
    model, options, description, found = _source_model(weights, classes or paper.NUM_CLASSES)
    classes = classes or found
    if include_top and classes != found:
        model = _with_classes(model, options, classes, description)
    if include_top:
        outputs = _head(model.output, classifier_activation)
    else:
        outputs = _pool5(model)
        if pooling == "avg":
            outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(outputs)
        elif pooling == "max":
            outputs = keras.layers.GlobalMaxPooling2D(name="max_pool")(outputs)
    network = keras.Model(model.input, outputs, name=name)
    if input_tensor is not None:
        network = keras.Model(keras.utils.get_source_inputs(input_tensor), network(input_tensor),
                              name=name)
    if include_top and _kind(weights) == _RUN and classes == found:
        network.class_names = tuple(_run(weights).run_dir.read().class_names)
    return network


def preprocess_input(x, weights=BVLC_ALEXNET):
    """RGB images in [0, 255] as the network of `weights` takes them.

    Args:
      x: uint8 or float images `[..., S, S, 3]`, RGB, already at the model's
        input size (`load_image` gives them), or at 256x256 before the crop.
        A numpy array (or list) gives numpy; a tensor gives a tensor.
      weights: As for `AlexNet`: "bvlc_alexnet" (the default), a .caffemodel
        or .weights.h5 (Caffe's per-channel means, in RGB order), a run
        directory (its own mean image or channel mean, and scale), or None
        (an untrained network: no statistics, the pixels as they are).

    Returns:
      float32, the same shape: `(x - mean) / scale`.
    """
    statistics = _mean_and_scale(weights)
    if statistics is None:
        return (np.asarray(x, np.float32) if isinstance(x, (np.ndarray, list, tuple))
                else ops.cast(x, "float32"))
    mean, scale = statistics
    if mean.ndim == 3:          # a mean image (256x256): its centre crop for a cropped input
        size = int(x.shape[-2]) if hasattr(x, "shape") else np.asarray(x).shape[-2]
        if size > mean.shape[0]:
            raise ValueError(f"preprocess_input takes images of at most {mean.shape[0]}x"
                             f"{mean.shape[0]} for these weights; got width {size} (resize with "
                             "load_image)")
        offset = (mean.shape[0] - size) // 2
        mean = mean[offset:offset + size, offset:offset + size]
    if isinstance(x, (np.ndarray, list, tuple)):
        return ((np.asarray(x, np.float32) - mean) / scale).astype(np.float32)
    return (ops.cast(x, "float32") - mean) / scale


def load_image(path, weights=BVLC_ALEXNET):
    """An image file as the weights were evaluated on it: float32 `[S, S, 3]`, RGB, 0-255.

    Resized the weights' way to 256x256 (bvlc_alexnet and Caffe files: both
    sides squashed to 256; the paper's: the shorter side to 256 and the
    central 256x256), then the centre S x S crop (227 for Caffe, 224 for the
    paper, a run's own size). Feed the result to `preprocess_input`.

    Args:
      path: A JPEG, PNG, GIF or BMP file.
      weights: As for `AlexNet` (default "bvlc_alexnet").

    On TensorFlow the tools' own decoding and resizing; on JAX and PyTorch Pillow's decoder
    and `keras.ops.image.resize` (the same steps; pixels within a few levels of 255).
    """
    resize, size = _resize_and_size(weights)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise ValueError(f"cannot read {path} ({error.strerror})") from None
    if not on_tensorflow():                    # Pillow and keras.ops (data/images.py)
        try:
            image = images.decode_rgb(data)
        except ValueError as problem:
            raise ValueError(f"{path} is {problem}") from None
        return images.centre_crop(images.image_256(image, resize), size)
    import tensorflow as tf
    from alexnet_tf.data import preprocessing
    problem = preprocessing.image_problem(data)
    if problem:
        raise ValueError(f"{path} is {problem}")
    try:
        image = preprocessing.decode_rgb(data)
    except tf.errors.InvalidArgumentError:
        raise ValueError(f"{path} is {images.DAMAGED}") from None
    return preprocessing.centre_crop(preprocessing.image_256(image, resize), size).numpy()


def _short_name(name):
    """'tabby, tabby cat' -> 'tabby' (Keras' style: the first name, spaces as underscores)."""
    return name.split(",")[0].strip().replace(" ", "_")


def _class_names(weights):
    """(class ids, short names) of the classes `weights` scores: ILSVRC-2012's unless a run's."""
    names = getattr(weights, "class_names", None)
    if names is None and weights is not None and not isinstance(weights, keras.Model) and \
            _kind(weights) == _RUN:
        names = _run(weights).run_dir.read().class_names
    if names is None:
        return imagenet.synsets(), [_short_name(n) for n in imagenet.names()]
    return list(names), [_short_name(imagenet.describe(n)) for n in names]


def decode_predictions(preds, top=5, weights=None):
    """The top classes of each prediction, in Keras' format: ILSVRC-2012's, or a run's own.

    Args:
      preds: `[batch, classes]` scores (probabilities or logits) in the classes'
        order: ILSVRC-2012's (sorted synset ids: TFDS' and Caffe's), or a run's.
      top: How many classes per image.
      weights: None (ILSVRC-2012), or a run's model (`AlexNet(weights=RUN)`) or
        its run directory / checkpoint: that run's class names.

    Returns:
      One list per image of `(class_id, name, score)` tuples, best first,
      e.g. `("n02123045", "tabby", 0.62)`, or `("circle", "circle", 0.9)` for a run.
    """
    ids, names = _class_names(weights)
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != len(ids):
        raise ValueError(f"decode_predictions expects a batch of predictions (a 2D array of shape "
                         f"(samples, {len(ids)})); got an array of shape {preds.shape}" +
                         ("; for a run's own classes pass weights=its model or run directory"
                          if weights is None else ""))
    results = []
    for row in preds:
        best = np.argsort(-row, kind="stable")[:top]
        results.append([(ids[i], names[i], float(row[i])) for i in best])
    return results


def fc7_model(model):
    """A model sharing `model`'s weights that gives fc7's activations, `[batch, 4096]`.

    fc7 after its ReLU (both towers' 2048, tower a's first) is the paper's
    image feature (section 6.1: retrieval by Euclidean distance).

    Example:

    >>> features = fc7_model(AlexNet(weights="bvlc_alexnet")).predict(x)  # doctest: +SKIP
    """
    return feature_extractor(model)
