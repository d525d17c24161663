"""AlexNet as a Keras functional model, split into the paper's two towers.

Layer names are stable and documented (docs/ARCHITECTURE.md, "Layer names"): with two towers
every per-tower layer ends in `_a` (tower 0) or `_b` (tower 1), e.g. `conv1_a`,
`conv1_b`, ..., `fc7_b`, and the classifier is `fc8`. With one tower the
suffix is dropped (`conv1`, ..., `fc8`).

Connectivity (figure 2 of the paper): conv2, conv4 and conv5 see only their own
tower's previous layer; conv3, fc6, fc7 and fc8 see both towers.
"""

import re

import keras

from alexnet_tf import errors, paper
from alexnet_tf.config import (ACTIVATIONS, BIAS_INITS, IMAGE_SIZES, KERNEL_INITS, ModelConfig,
                               POOL_ROUNDINGS, REMOVABLE, WEIGHTED_LAYERS)
from alexnet_tf.model.layers import (LocalResponseNormalization, on_tensorflow, PlacedConcatenate,
                                     PlacedConv2D, PlacedDense, PlacedDropout, PlacedFlatten,
                                     PlacedMaxPooling2D)



def resolve_tower_devices(devices="auto"):
    """Returns the (tower a, tower b) device strings for `build_alexnet`.

    Args:
      devices: "auto" (two GPUs when there are at least two, else no placement),
        None (no placement: TensorFlow places everything), or a pair of device
        strings such as ("/GPU:0", "/GPU:1") or ("/CPU:0", "/CPU:1"), each of
        which must exist as a logical device. Placement is TensorFlow's: on
        another Keras backend "auto" is no placement and a pair is refused.

    Returns:
      A pair of device strings, or (None, None) for no placement.
    """
    if devices is None or (not isinstance(devices, str) and tuple(devices) == (None, None)):
        return (None, None)                      # (None, None): already resolved to no placement
    if not on_tensorflow():
        if devices == "auto":
            return (None, None)
        raise errors.ConfigError(f"towers placed on {devices!r} need the TensorFlow backend "
                                 f"(Keras runs on {keras.backend.backend()}); pass 'auto' or None.")
    import tensorflow as tf
    if isinstance(devices, str):
        if devices != "auto":
            devices = tuple(d.strip() for d in devices.split(","))
        else:
            gpus = tf.config.list_logical_devices("GPU")
            return (gpus[0].name, gpus[1].name) if len(gpus) >= 2 else (None, None)
    devices = tuple(devices)
    if len(devices) != 2:
        raise errors.ConfigError(f"towers need exactly two devices, got {devices!r}; "
                                 "pass e.g. ('/GPU:0', '/GPU:1'), 'auto' or None.")
    available = {_canonical(d.name) for d in tf.config.list_logical_devices()}
    for d in devices:
        if _canonical(d) not in available:
            raise errors.ConfigError(
                f"tower device {d!r} does not exist here (available: "
                f"{', '.join(sorted(available))}); pick one of those, 'auto' or None.")
    return devices


def _canonical(device):
    import tensorflow as tf
    spec = tf.DeviceSpec.from_string(device)
    return f"/{(spec.device_type or '').upper()}:{spec.device_index or 0}"


def base_name(layer_name):
    """A layer's name without its tower suffix: 'conv1_a' -> 'conv1' (one tower: unchanged)."""
    return layer_name.split("_")[0]


def freeze(model, names):
    """Makes the layers of base names `names` non-trainable (both towers': conv1_a, conv1_b)."""
    for layer in model.layers:
        if base_name(layer.name) in names and layer.weights:
            layer.trainable = False
    return tuple(names)


def _initializers(layer_name, kernel_init, bias_init, seed):
    """The kernel and bias initialisers for one layer (section 5 of the paper)."""
    if kernel_init == "paper":
        kernel = keras.initializers.RandomNormal(0.0, paper.INIT_STDDEV, seed=seed)
    elif kernel_init == "he":
        kernel = keras.initializers.HeNormal(seed=seed)
    else:
        kernel = keras.initializers.GlorotUniform(seed=seed)
    one = bias_init == "paper" and base_name(layer_name) in paper.BIAS_ONE_LAYERS
    return kernel, keras.initializers.Constant(1.0 if one else 0.0)


class _Builder:
    """Creates the layers of one model, numbering their initialiser seeds.

    `initialize=False`: the weights start as zeros (the caller sets every one of them), and
    each layer keeps the configured initialisers in its config.
    """

    def __init__(self, kernel_init, bias_init, seed, activation, initialize=True):
        self.kernel_init, self.bias_init = kernel_init, bias_init
        self.seed, self.activation, self.initialize = seed, activation, initialize
        self.count = 0

    def _next_seed(self):
        self.count += 1
        return None if self.seed is None else self.seed * 1000 + self.count

    def _weighted(self, layer_class, x, name, **kwargs):
        kernel, bias = _initializers(name, self.kernel_init, self.bias_init, self._next_seed())
        if self.initialize:
            return layer_class(kernel_initializer=kernel, bias_initializer=bias, name=name,
                               **kwargs)(x)
        layer = layer_class(kernel_initializer="zeros", bias_initializer="zeros", name=name,
                            **kwargs)
        y = layer(x)
        layer.kernel_initializer, layer.bias_initializer = kernel, bias
        return y

    def conv(self, x, filters, size, stride, name, device, padding="same"):
        return self._weighted(PlacedConv2D, x, name, filters=filters, kernel_size=size,
                              strides=stride, padding=padding, activation=self.activation,
                              device=device)

    def dense(self, x, units, name, device, activation):
        return self._weighted(PlacedDense, x, name, units=units, activation=activation,
                              device=device)


def _merge(tensors, name, device):
    """Gives a layer that sees both towers its input: one concat on `device`."""
    if len(tensors) == 1:
        return tensors[0]
    return PlacedConcatenate(axis=-1, name=name, device=device)(tensors)


_FROM_CONFIG = object()


def build_alexnet(num_classes=paper.NUM_CLASSES, config=None, *, devices=_FROM_CONFIG, seed=None,
                  include_softmax=False, name="alexnet", initialize=True, **options):
    """Builds the paper's AlexNet (figure 2) as a Keras functional model.

    The model maps a batch of mean-subtracted float images [batch, S, S, 3]
    to logits [batch, num_classes] (or, with `include_softmax`, to
    probabilities from a float32 softmax named `probabilities`).

    Args:
      num_classes: Outputs of fc8 (1000 for ImageNet).
      config: The network's options, a `config.ModelConfig` (its fields are
        documented there: towers, lrn, lrn_k, lrn_alpha, lrn_across_towers,
        pool_size, pool_stride, pool_rounding, activation, half_width,
        remove, kernel_init, bias_init, dropout_rate, image_size, devices).
        Default: the paper's network.
      devices: Tower placement, overriding the config's: see
        `resolve_tower_devices` ("auto", None, or two device strings).
      seed: If set, every layer's initialiser gets its own seed derived from
        it, so the same seed gives the same weights.
      include_softmax: Append a float32 softmax output instead of logits.
      name: Model name.
      initialize: False when every weight is set next (a checkpoint restored, a
        weights file loaded): the weights start as zeros, sparing the 0.5 s of
        drawing 61M random numbers; the layers' configs keep their initialisers.
      **options: Instead of `config`: its fields as keyword arguments.

    Returns:
      A `keras.Model`: with towers=2, 60,965,224 parameters at 1000 classes
      (62,378,344 with one full-width tower; 59,798,312 for `half_width`).

    Example:

    >>> model = build_alexnet(1000, ModelConfig(lrn_k=1.0), devices=None)
    >>> build_alexnet(num_classes=1000, devices=None).count_params()
    60965224
    """
    if config is None:
        config = ModelConfig(**options)
    elif options:
        raise TypeError(f"give build_alexnet a ModelConfig or its fields ({', '.join(options)}), "
                        "not both")
    if devices is _FROM_CONFIG:
        devices = config.placement()
    towers, lrn, lrn_k, lrn_alpha = config.towers, config.lrn, config.lrn_k, config.lrn_alpha
    lrn_across_towers, pool_rounding = config.lrn_across_towers, config.pool_rounding
    pool_size, pool_stride, activation = config.pool_size, config.pool_stride, config.activation
    kernel_init, bias_init = config.kernel_init, config.bias_init
    half_width, remove, dropout_rate = config.half_width, tuple(config.remove), config.dropout_rate
    image_size = config.image_size
    _check_choice("towers", towers, (1, 2))
    _check_choice("activation", activation, ACTIVATIONS)
    _check_choice("kernel_init", kernel_init, KERNEL_INITS)
    _check_choice("bias_init", bias_init, BIAS_INITS)
    _check_choice("image_size", image_size, tuple(IMAGE_SIZES))
    _check_choice("pool_rounding", pool_rounding, POOL_ROUNDINGS)
    if half_width and towers != 1:
        raise errors.ConfigError("half_width is the paper's one-GPU net: use it with towers=1")
    if not set(remove) <= set(REMOVABLE):
        raise errors.ConfigError(f"remove takes layers among {', '.join(REMOVABLE)}; got "
                                 f"{', '.join(remove)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}.")
    tower_devices = resolve_tower_devices(devices) if towers == 2 else (None,)
    suffixes = ("_a", "_b") if towers == 2 else ("",)
    tw = list(zip(suffixes, tower_devices))
    make = _Builder(kernel_init, bias_init, seed, activation, initialize)

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = inputs
    if IMAGE_SIZES[image_size]:
        x = keras.layers.ZeroPadding2D(IMAGE_SIZES[image_size], name="conv1_pad")(x)

    def normalise(h, layer):
        """LRN of each tower's maps: within the tower, or across both (`lrn_across_towers`)."""
        if not lrn:
            return h
        if not lrn_across_towers or towers == 1:
            return [LocalResponseNormalization(n=paper.LRN_N, k=lrn_k, alpha=lrn_alpha,
                                               beta=paper.LRN_BETA, name=f"lrn{layer}{s}",
                                               device=d)(hi) for hi, (s, d) in zip(h, tw)]
        width = h[0].shape[-1]
        return [LocalResponseNormalization(
            n=paper.LRN_N, k=lrn_k, alpha=lrn_alpha, beta=paper.LRN_BETA,
            output_channels=(i * width, (i + 1) * width), name=f"lrn{layer}{s}", device=d)(
                _merge(h, f"concat_lrn{layer}{s}", d)) for i, (s, d) in enumerate(tw)]

    def pool(h, layer):
        return [PlacedMaxPooling2D(pool_size, pool_stride, rounding=pool_rounding,
                                   name=f"pool{layer}{s}", device=d)(hi)
                for hi, (s, d) in zip(h, tw)]

    # The paper's one-GPU comparator halves conv1-4's kernels (section 3.2 and its footnote).
    width = 2 if half_width else towers
    f1, k1, s1 = paper.CONV1
    h = [make.conv(x, f1 // width, k1, s1, f"conv1{s}", d, padding="valid") for s, d in tw]
    h = pool(normalise(h, 1), 1)
    f2, k2, s2 = paper.CONV2
    h = [make.conv(hi, f2 // width, k2, s2, f"conv2{s}", d) for hi, (s, d) in zip(h, tw)]
    h = pool(normalise(h, 2), 2)
    if "conv3" not in remove:
        f3, k3, s3 = paper.CONV3
        h = [make.conv(_merge(h, f"concat3{s}", d), f3 // width, k3, s3, f"conv3{s}", d)
             for s, d in tw]
    if "conv4" not in remove:
        f4, k4, s4 = paper.CONV4
        h = [make.conv(hi, f4 // width, k4, s4, f"conv4{s}", d) for hi, (s, d) in zip(h, tw)]
    if "conv5" not in remove:
        f5, k5, s5 = paper.CONV5
        h = [make.conv(hi, f5 // towers, k5, s5, f"conv5{s}", d) for hi, (s, d) in zip(h, tw)]
    h = pool(h, 5)

    h = [PlacedFlatten(name=f"flatten{s}", device=d)(_merge(h, f"concat6{s}", d)) for s, d in tw]
    for layer in (6, 7):
        inp = h if layer == 6 else [_merge(h, f"concat{layer}{s}", d) for s, d in tw]
        h = [make.dense(hi, paper.FC_UNITS // towers, f"fc{layer}{s}", d, activation)
             for hi, (s, d) in zip(inp, tw)]
        h = [PlacedDropout(dropout_rate, name=f"dropout{layer}{s}", device=d)(hi)
             for hi, (s, d) in zip(h, tw)]
    outputs = make.dense(_merge(h, "concat8", tower_devices[0]), num_classes, "fc8",
                         tower_devices[0], None)
    if include_softmax:
        outputs = keras.layers.Softmax(dtype="float32", name="probabilities")(outputs)
    return keras.Model(inputs, outputs, name=name)


def _check_choice(name, value, choices):
    if value not in choices:
        raise errors.ConfigError(f"{name} must be one of {', '.join(map(str, choices))}; "
                                 f"got {value!r}.")


def feature_layer_names(model):
    """The fc7 layers (one per tower), whose concatenated outputs are the 4096-d feature."""
    names = sorted(layer.name for layer in model.layers if re.fullmatch(r"fc7(_[ab])?", layer.name))
    if not names:
        raise errors.ConfigError(f"model {model.name} has no fc7 layer")
    return names


def feature_extractor(model):
    """A model sharing `model`'s weights that maps its input to fc7's activations [batch, 4096]."""
    outputs = [model.get_layer(name).output for name in feature_layer_names(model)]
    if len(outputs) > 1:
        outputs = [keras.layers.Concatenate(axis=-1, name="fc7_features")(outputs)]
    return keras.Model(model.input, outputs[0], name=f"{model.name}_fc7")


def copy_matching(source_model, model):
    """Copies `source_model`'s kernels and biases into `model`'s where name and shape match.

    Returns (loaded, initialised): lists of `model`'s variable paths.
    """
    theirs = {v.path: v for v in _weights(source_model)}
    loaded, initialised = [], []
    for variable in _weights(model):
        match = theirs.get(variable.path)
        if match is not None and tuple(match.shape) == tuple(variable.shape):
            variable.assign(match.value)
            loaded.append(variable.path)
        else:
            initialised.append(variable.path)
    return loaded, initialised


def _weights(model):
    """The kernels and biases of conv1 ... fc8 (both towers), in model order."""
    return [w for layer in model.layers if base_name(layer.name) in WEIGHTED_LAYERS
            for w in layer.weights]
