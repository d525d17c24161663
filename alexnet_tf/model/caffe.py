"""Caffe's bvlc_alexnet, read without Caffe and mapped one to one onto our two towers.

The reader parses the protobuf wire format with the `protobuf` package and a
minimal schema that keeps caffe.proto's field numbers (BVLC/caffe,
src/caffe/proto/caffe.proto): the old V1 layout (`layers`, field 2, blob dims
as num/channels/height/width, fully connected weights as (1, 1, out, in)) and
the newer one (`layer`, field 100, `BlobShape`). Blob data is declared as
bytes: a packed float field has the same wire type, so each blob's floats are
one zero-copy `np.frombuffer` away (unpacked floats fall back to a float schema).

bvlc_alexnet has the paper's shape: conv2, conv4 and conv5 are grouped
(`group: 2`), so its 60,965,224 parameters map onto the two towers exactly:

* group 0 is tower a (`*_a`), group 1 tower b;
* conv1's input channels are reversed (Caffe reads BGR; our models take RGB);
* Caffe's kernels are (out, in, h, w), Keras' (h, w, in, out);
* fc6's inputs are permuted from Caffe's C,H,W flatten order to Keras' H,W,C;
* fc weights (out, in) are transposed to Keras' (in, out).

Exactness needs model and preprocessing options too (`IMPORTED_MODEL`): 227
input, Caffe's LRN (k=1, alpha/n) across both towers' maps, ceil-mode
pooling, and Caffe's test-time preprocessing (256x256 squash, minus the mean
image, the centre 227 crop). docs/PAPER_CHOICES.md lists them.

Example:

    net = read_caffemodel("bvlc_alexnet.caffemodel")
    weights = alexnet_weights(net)          # checks the shape; {"conv1": (W, b), ...}
    model = build_alexnet(1000, **imported_model_config(weights).build_kwargs())
    assign(model, weights)
"""

import dataclasses
import hashlib
import os

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from alexnet_tf import errors
from alexnet_tf.config import ModelConfig

# The published file (BVLC/caffe models/bvlc_alexnet/readme.md).
PUBLISHED_SHA1 = "9116a64c0fbe4459d18f4bb6b56d647b63920377"
PUBLISHED_URL = "http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel"
# Caffe's per-channel ImageNet mean, B, G, R (caffe/python/caffe/imagenet/ilsvrc_2012_mean.npy
# averaged; the value its examples use when no mean file is given).
CAFFE_BGR_MEAN = (104.007, 116.669, 122.679)
MEAN_SIZE = 256
IMAGE_SIZE = 227
# The published net's norm1/norm2 (k=1, alpha=1e-4 over local_size 5: 2e-5 as our layer takes
# it) and its pooling (Caffe's default round_mode CEIL).
BVLC_LRN_K, BVLC_LRN_ALPHA, BVLC_POOL_ROUNDING = 1.0, 2e-5, "ceil"


def network_config(lrn_k=BVLC_LRN_K, lrn_alpha=BVLC_LRN_ALPHA, pool_rounding=BVLC_POOL_ROUNDING):
    """The ModelConfig of Caffe's forward pass (defaults: the published bvlc_alexnet's): 227x227
    input, LRN across the towers, pooling rounded as the file says."""
    return ModelConfig(image_size=IMAGE_SIZE, lrn_k=lrn_k, lrn_alpha=lrn_alpha,
                       lrn_across_towers=True, pool_rounding=pool_rounding)


def rgb_mean():
    """Caffe's per-channel mean in RGB order, float32 [3]."""
    return np.asarray(CAFFE_BGR_MEAN[::-1], np.float32)


class CaffeError(errors.UserError):
    """A Caffe file that cannot be imported; the message is one line."""


# --- The schema: caffe.proto's field numbers, only what the import reads ---------------------

_PACKAGE = "alexnet_tf_caffe"
_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_KINDS = {"string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "int32": _F.TYPE_INT32,
          "int64": _F.TYPE_INT64, "uint32": _F.TYPE_UINT32, "float": _F.TYPE_FLOAT,
          "double": _F.TYPE_DOUBLE, "bool": _F.TYPE_BOOL}

_MESSAGES = {
    # name: [(field, number, type, repeated, default)]
    "BlobShape": [("dim", 1, "int64", True, None)],
    "BlobProto": [("num", 1, "int32", False, None), ("channels", 2, "int32", False, None),
                  ("height", 3, "int32", False, None), ("width", 4, "int32", False, None),
                  ("data", 5, "bytes", False, None), ("shape", 7, "BlobShape", False, None),
                  ("double_data", 8, "bytes", False, None)],
    "BlobFloats": [("data", 5, "float", True, None), ("double_data", 8, "double", True, None)],
    "ConvolutionParameter": [
        ("num_output", 1, "uint32", False, None), ("pad", 3, "uint32", True, None),
        ("kernel_size", 4, "uint32", True, None), ("group", 5, "uint32", False, "1"),
        ("stride", 6, "uint32", True, None), ("pad_h", 9, "uint32", False, None),
        ("pad_w", 10, "uint32", False, None), ("kernel_h", 11, "uint32", False, None),
        ("kernel_w", 12, "uint32", False, None), ("stride_h", 13, "uint32", False, None),
        ("stride_w", 14, "uint32", False, None)],
    "InnerProductParameter": [("num_output", 1, "uint32", False, None),
                              ("transpose", 6, "bool", False, None)],
    "LRNParameter": [("local_size", 1, "uint32", False, "5"), ("alpha", 2, "float", False, "1"),
                     ("beta", 3, "float", False, "0.75"), ("norm_region", 4, "int32", False, "0"),
                     ("k", 5, "float", False, "1")],
    "PoolingParameter": [("pool", 1, "int32", False, "0"), ("kernel_size", 2, "uint32", False, None),
                         ("stride", 3, "uint32", False, "1"), ("pad", 4, "uint32", False, None),
                         ("kernel_h", 5, "uint32", False, None),
                         ("kernel_w", 6, "uint32", False, None),
                         ("stride_h", 7, "uint32", False, None),
                         ("stride_w", 8, "uint32", False, None),
                         ("pad_h", 9, "uint32", False, None), ("pad_w", 10, "uint32", False, None),
                         ("global_pooling", 12, "bool", False, None),
                         ("round_mode", 13, "int32", False, "0")],
    "LayerParameter": [("name", 1, "string", False, None), ("type", 2, "string", False, None),
                       ("blobs", 7, "BlobProto", True, None),
                       ("convolution_param", 106, "ConvolutionParameter", False, None),
                       ("inner_product_param", 117, "InnerProductParameter", False, None),
                       ("lrn_param", 118, "LRNParameter", False, None),
                       ("pooling_param", 121, "PoolingParameter", False, None)],
    "V1LayerParameter": [("name", 4, "string", False, None), ("type", 5, "int32", False, None),
                         ("blobs", 6, "BlobProto", True, None),
                         ("convolution_param", 10, "ConvolutionParameter", False, None),
                         ("inner_product_param", 17, "InnerProductParameter", False, None),
                         ("lrn_param", 18, "LRNParameter", False, None),
                         ("pooling_param", 19, "PoolingParameter", False, None)],
    "NetParameter": [("name", 1, "string", False, None),
                     ("layers", 2, "V1LayerParameter", True, None),
                     ("layer", 100, "LayerParameter", True, None)],
}
# NetParameter's fields in caffe.proto (what a caffemodel may start with): number -> wire type.
_NET_FIELDS = {1: 2, 2: 2, 3: 2, 4: 0, 5: 0, 6: 2, 7: 0, 8: 2, 100: 2}

# V1LayerParameter.LayerType values -> the V2 type names.
V1_TYPES = {1: "Accuracy", 3: "Concat", 4: "Convolution", 5: "Data", 6: "Dropout",
            8: "Flatten", 12: "ImageData", 14: "InnerProduct", 15: "LRN", 17: "Pooling",
            18: "ReLU", 20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split", 29: "MemoryData",
            36: "Silence", 23: "TanH", 24: "WindowData", 32: "DummyData"}
# Layers that carry no computation of the network's path (inputs, losses, scoring).
_IGNORED = {"Data", "ImageData", "MemoryData", "WindowData", "DummyData", "Input", "Accuracy",
            "SoftmaxWithLoss", "Softmax", "Silence", "Split"}


def _schema():
    file_proto = descriptor_pb2.FileDescriptorProto(name="alexnet_tf_caffe.proto",
                                                    package=_PACKAGE, syntax="proto2")
    for message, fields in _MESSAGES.items():
        proto = file_proto.message_type.add(name=message)
        for name, number, kind, repeated, default in fields:
            field = proto.field.add(name=name, number=number,
                                    label=_REPEATED if repeated else _OPTIONAL)
            if kind in _KINDS:
                field.type = _KINDS[kind]
            else:
                field.type, field.type_name = _F.TYPE_MESSAGE, f".{_PACKAGE}.{kind}"
            if default is not None:
                field.default_value = default
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
            for name in _MESSAGES}


_CLASSES = _schema()


# --- Reading -------------------------------------------------------------------------------


@dataclasses.dataclass
class Layer:
    """One layer of a Caffe net: its name, V2 type name, parameters and blobs (numpy)."""
    name: str
    type: str
    params: object            # the layer's *_param message for its type, or None
    blobs: list


@dataclasses.dataclass
class CaffeNet:
    """A read caffemodel."""
    name: str
    layout: str               # "V1" (layers, field 2) or "V2" (layer, field 100)
    layers: list
    sha1: str
    size: int


def _varint(data, position):
    result = shift = 0
    while True:
        if position >= len(data):
            raise IndexError
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _check_top_level(data, path):
    """Walks NetParameter's top-level fields: not a caffemodel, or truncated, gets one line."""
    position, first = 0, True
    while position < len(data):
        try:
            tag, position = _varint(data, position)
        except (IndexError, ValueError):
            raise CaffeError(f"{path} is truncated: it ends inside a field's tag") from None
        number, wire = tag >> 3, tag & 7
        if first and _NET_FIELDS.get(number) != wire:
            raise CaffeError(f"{path} is not a caffemodel (a binary NetParameter, like "
                             "bvlc_alexnet.caffemodel): its first bytes are not a Caffe net's")
        first = False
        try:
            if wire == 0:
                _, position = _varint(data, position)
            elif wire == 1:
                position += 8
            elif wire == 2:
                length, position = _varint(data, position)
                position += length
            elif wire == 5:
                position += 4
            else:
                raise ValueError
        except (IndexError, ValueError):
            raise CaffeError(f"{path} is not a caffemodel: field {number} at byte {position} "
                             "has an invalid encoding") from None
        if position > len(data):
            raise CaffeError(f"{path} is truncated: {len(data):,} bytes, but its last field "
                             f"(number {number}) needs {position:,}; download it again")
    if first:
        raise CaffeError(f"{path} is empty, not a caffemodel")


def _floats(blob, what):
    """A BlobProto's values as float32 numpy (its packed bytes, or a float reparse)."""
    if blob.data:
        if len(blob.data) % 4:
            raise CaffeError(f"{what}: its data is not a whole number of floats")
        return np.frombuffer(blob.data, "<f4")
    if blob.double_data:
        return np.frombuffer(blob.double_data, "<f8").astype(np.float32)
    # Unpacked floats (wire type 5) do not parse as bytes: read the blob again as floats.
    floats = _CLASSES["BlobFloats"].FromString(blob.SerializeToString())
    values = floats.data or floats.double_data
    return np.asarray(values, np.float32)


def _blob_shape(blob):
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    return (blob.num, blob.channels, blob.height, blob.width)      # V1: 4-D always


def _blob(blob, what):
    shape, values = _blob_shape(blob), _floats(blob, what)
    if int(np.prod(shape)) != values.size:
        raise CaffeError(f"{what}: shape {'x'.join(map(str, shape))} needs "
                         f"{int(np.prod(shape)):,} values, it holds {values.size:,}")
    return values.reshape(shape)


_PARAMS = {"Convolution": "convolution_param", "InnerProduct": "inner_product_param",
           "LRN": "lrn_param", "Pooling": "pooling_param"}


def _layer(message, v1, index):
    kind = V1_TYPES.get(message.type, f"V1 type {message.type}") if v1 else message.type
    name = message.name or f"layer {index}"
    field = _PARAMS.get(kind)
    params = getattr(message, field) if field else None
    return Layer(name, kind, params,
                 [_blob(b, f"{name}'s blob {i}") for i, b in enumerate(message.blobs)])


def _read_bytes(path, flag):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise CaffeError(f"cannot read {path} ({error.strerror}); check --{flag}") from None


def read_caffemodel(path):
    """The `CaffeNet` in a .caffemodel file (V1 or V2 layout); one-line `CaffeError` otherwise."""
    data = _read_bytes(path, "caffemodel")
    _check_top_level(data, path)
    net = _CLASSES["NetParameter"]()
    try:
        net.ParseFromString(data)
    except DecodeError:
        raise CaffeError(f"{path} is not a caffemodel: its layers do not parse as Caffe's "
                         "NetParameter") from None
    sha1, size = hashlib.sha1(data).hexdigest(), len(data)
    del data
    if len(net.layers) and len(net.layer):
        raise CaffeError(f"{path} mixes V1 layers (field 2) and V2 layers (field 100)")
    v1 = bool(len(net.layers))
    messages = net.layers if v1 else net.layer
    if not len(messages):
        raise CaffeError(f"{path} is not a caffemodel: it has no layers")
    layers = [_layer(m, v1, i) for i, m in enumerate(messages)]
    return CaffeNet(net.name, "V1" if v1 else "V2", layers, sha1, size)


def read_mean(path):
    """Caffe's mean image (a BlobProto .binaryproto, 1x3x256x256 BGR) as RGB [256, 256, 3]."""
    data = _read_bytes(path, "mean")
    blob = _CLASSES["BlobProto"]()
    try:
        blob.ParseFromString(data)
        values = _blob(blob, path)
    except (DecodeError, CaffeError):
        raise CaffeError(f"{path} is not a Caffe mean file (a BlobProto .binaryproto such as "
                         "imagenet_mean.binaryproto)") from None
    shape = values.shape
    if len(shape) == 4 and shape[0] == 1:
        values = values[0]
    if values.shape != (3, MEAN_SIZE, MEAN_SIZE):
        raise CaffeError(f"{path} is a {'x'.join(map(str, shape))} mean; bvlc_alexnet's is "
                         f"1x3x{MEAN_SIZE}x{MEAN_SIZE} (Caffe's imagenet_mean.binaryproto)")
    return np.ascontiguousarray(values[::-1].transpose(1, 2, 0), np.float32)    # BGR CHW -> RGB HWC


# --- bvlc_alexnet's shape -------------------------------------------------------------------

# The layers on the network's path, in order: (type, Caffe's name, what must hold).
_CONV = "Convolution"
ALEXNET = [
    (_CONV, "conv1", dict(num_output=96, kernel=11, stride=4, pad=0, group=1, inputs=3)),
    ("ReLU", "relu1", {}), ("LRN", "norm1", {}), ("Pooling", "pool1", {}),
    (_CONV, "conv2", dict(num_output=256, kernel=5, stride=1, pad=2, group=2, inputs=96)),
    ("ReLU", "relu2", {}), ("LRN", "norm2", {}), ("Pooling", "pool2", {}),
    (_CONV, "conv3", dict(num_output=384, kernel=3, stride=1, pad=1, group=1, inputs=256)),
    ("ReLU", "relu3", {}),
    (_CONV, "conv4", dict(num_output=384, kernel=3, stride=1, pad=1, group=2, inputs=384)),
    ("ReLU", "relu4", {}),
    (_CONV, "conv5", dict(num_output=256, kernel=3, stride=1, pad=1, group=2, inputs=384)),
    ("ReLU", "relu5", {}), ("Pooling", "pool5", {}),
    ("InnerProduct", "fc6", dict(num_output=4096, inputs=256 * 6 * 6)),
    ("ReLU", "relu6", {}), ("Dropout", "drop6", {}),
    ("InnerProduct", "fc7", dict(num_output=4096, inputs=4096)),
    ("ReLU", "relu7", {}), ("Dropout", "drop7", {}),
    ("InnerProduct", "fc8", dict(num_output=1000, inputs=4096)),
]
LRN_SIZE, LRN_BETA, POOL = 5, 0.75, (3, 2)


@dataclasses.dataclass
class AlexNetWeights:
    """bvlc_alexnet's weights by Caffe's layer name, and the options its layers were read with.

    Attributes:
      blobs: {"conv1": (weights, bias), ..., "fc8": (...)} in Caffe's layouts:
        conv (out, in/group, h, w), fc (out, in).
      lrn_k, lrn_alpha: LRN's k and alpha as our layer takes them (alpha / n).
      pool_rounding: "ceil" (Caffe's default) or "floor".
    """
    blobs: dict
    lrn_k: float
    lrn_alpha: float
    pool_rounding: str


def _pair(params, single, height, width, default):
    """(h, w) of a conv/pool size that is given as one value (or a repeated one) or as h and w."""
    if params.HasField(height) or params.HasField(width):
        return getattr(params, height), getattr(params, width)
    value = getattr(params, single)
    if not isinstance(value, int):          # repeated (ConvolutionParameter)
        value = list(value)
        value = value[0] if value else default
    elif not params.HasField(single):
        value = default
    return value, value


def _differs(layer, expected_type, expected_name):
    return (f"layer {layer.name!r} ({layer.type}) where bvlc_alexnet has {expected_type} "
            f"{expected_name!r}")


def alexnet_weights(net, path="the caffemodel"):
    """Checks `net` has bvlc_alexnet's shape; returns its `AlexNetWeights`.

    The first layer, parameter or blob shape that differs gets a one-line
    CaffeError naming it.
    """
    path_layers = [layer for layer in net.layers if layer.type not in _IGNORED]
    blobs, lrns, pools = {}, [], []
    for index, (kind, name, spec) in enumerate(ALEXNET):
        if index >= len(path_layers):
            last = path_layers[-1].name if path_layers else "its inputs"
            raise CaffeError(f"{path} is not bvlc_alexnet: the network ends after {last!r}, where "
                             f"bvlc_alexnet goes on with {kind} {name!r}")
        layer = path_layers[index]
        if layer.type != kind:
            raise CaffeError(f"{path} is not bvlc_alexnet: {_differs(layer, kind, name)}")
        if kind == "LRN":
            lrns.append(_check_lrn(layer, path))
        elif kind == "Pooling":
            pools.append(_check_pool(layer, path))
        elif kind in (_CONV, "InnerProduct"):
            blobs[name] = _check_weights(layer, kind, name, spec, path)
    if len(path_layers) > len(ALEXNET):
        extra = path_layers[len(ALEXNET)]
        raise CaffeError(f"{path} is not bvlc_alexnet: it goes on after fc8 with "
                         f"{extra.type} {extra.name!r}")
    if lrns[0] != lrns[1]:
        raise CaffeError(f"{path} is not bvlc_alexnet: norm1 and norm2 have different k/alpha")
    if len(set(pools)) != 1:
        raise CaffeError(f"{path} is not bvlc_alexnet: its pooling layers round differently")
    (k, alpha), = set(lrns)
    return AlexNetWeights(blobs, lrn_k=k, lrn_alpha=float(f"{alpha / LRN_SIZE:.7g}"),
                          pool_rounding=pools[0])


def _check_lrn(layer, path):
    p = layer.params
    if (p.local_size, round(p.beta, 6), p.norm_region) != (LRN_SIZE, LRN_BETA, 0):
        raise CaffeError(f"{path} is not bvlc_alexnet: LRN {layer.name!r} has local_size "
                         f"{p.local_size}, beta {p.beta:g}, norm_region {p.norm_region} "
                         f"(bvlc_alexnet: {LRN_SIZE}, {LRN_BETA}, ACROSS_CHANNELS)")
    return float(f"{p.k:.7g}"), float(f"{p.alpha:.7g}")      # float32 in the file


def _check_pool(layer, path):
    p = layer.params
    size = _pair(p, "kernel_size", "kernel_h", "kernel_w", 0)
    stride = _pair(p, "stride", "stride_h", "stride_w", 1)
    pad = _pair(p, "pad", "pad_h", "pad_w", 0)
    if (p.pool, size, stride, pad, p.global_pooling) != (0, (3, 3), (2, 2), (0, 0), False):
        raise CaffeError(f"{path} is not bvlc_alexnet: pooling {layer.name!r} is not max pooling "
                         "3x3, stride 2, no padding")
    return "ceil" if p.round_mode == 0 else "floor"


def _check_weights(layer, kind, name, spec, path):
    what = f"{path} is not bvlc_alexnet: {kind} {layer.name!r} (bvlc_alexnet's {name})"
    p = layer.params
    if kind == _CONV:
        found = dict(num_output=p.num_output, group=p.group,
                     kernel=_pair(p, "kernel_size", "kernel_h", "kernel_w", 0),
                     stride=_pair(p, "stride", "stride_h", "stride_w", 1),
                     pad=_pair(p, "pad", "pad_h", "pad_w", 0))
        wanted = dict(num_output=spec["num_output"], group=spec["group"],
                      kernel=(spec["kernel"],) * 2, stride=(spec["stride"],) * 2,
                      pad=(spec["pad"],) * 2)
        shape = (spec["num_output"], spec["inputs"] // spec["group"], spec["kernel"],
                 spec["kernel"])
    else:
        found = dict(num_output=p.num_output, transpose=p.transpose)
        wanted = dict(num_output=spec["num_output"], transpose=False)
        shape = (spec["num_output"], spec["inputs"])
    for key, value in wanted.items():
        if found[key] != value:
            raise CaffeError(f"{what} has {key} {found[key]}, bvlc_alexnet {value}")
    if len(layer.blobs) != 2:
        raise CaffeError(f"{what} has {len(layer.blobs)} blobs; bvlc_alexnet has weights and bias")
    weights, bias = layer.blobs
    if kind == "InnerProduct" and weights.ndim == 4 and weights.shape[:2] == (1, 1):
        weights = weights[0, 0]                         # V1: (1, 1, out, in)
    bias = bias.reshape(-1) if bias.size == spec["num_output"] else bias
    if weights.shape != shape:
        raise CaffeError(f"{what} has weights {'x'.join(map(str, weights.shape))}, bvlc_alexnet "
                         f"{'x'.join(map(str, shape))}")
    if bias.shape != (spec["num_output"],):
        raise CaffeError(f"{what} has a bias of {bias.size} values, bvlc_alexnet "
                         f"{spec['num_output']}")
    return weights, bias


# --- Onto our model -------------------------------------------------------------------------


def keras_weights(weights):
    """{our layer name: [kernel, bias]} for the two-tower model, from `AlexNetWeights`."""
    b = weights.blobs
    out = {}

    def conv_kernel(w):
        return np.ascontiguousarray(w.transpose(2, 3, 1, 0))        # (out,in,h,w) -> (h,w,in,out)

    def split(layer, kernel, bias):
        half = kernel.shape[-1] // 2
        out[f"{layer}_a"] = [kernel[..., :half], bias[:half]]
        out[f"{layer}_b"] = [kernel[..., half:], bias[half:]]

    w1, b1 = b["conv1"]
    split("conv1", conv_kernel(w1[:, ::-1]), b1)                     # BGR -> RGB inputs
    for name in ("conv2", "conv3", "conv4", "conv5"):
        # Grouped or not, output channel o of group g = o // half sees group g's inputs, which
        # are its tower's; conv3's kernel sees both towers' maps in Caffe's order (a, then b).
        split(name, conv_kernel(b[name][0]), b[name][1])
    w6, b6 = b["fc6"]
    units = w6.shape[0]
    kernel6 = w6.reshape(units, 256, 6, 6).transpose(2, 3, 1, 0).reshape(-1, units)  # C,H,W -> H,W,C
    split("fc6", kernel6, b6)
    split("fc7", b["fc7"][0].T, b["fc7"][1])
    out["fc8"] = [b["fc8"][0].T, b["fc8"][1]]
    return out


def assign(model, weights):
    """Sets the two-tower `model`'s weights from `AlexNetWeights` (every layer that has weights)."""
    by_layer = keras_weights(weights)
    with_weights = {layer.name for layer in model.layers if layer.weights}
    if with_weights != set(by_layer):
        raise ValueError(f"model layers {sorted(with_weights ^ set(by_layer))} do not match "
                         "bvlc_alexnet's; build the model with towers=2")
    for name, values in by_layer.items():
        model.get_layer(name).set_weights([np.ascontiguousarray(v, np.float32) for v in values])


@dataclasses.dataclass
class Loaded:
    """A checked bvlc_alexnet caffemodel (and mean), ready to import."""
    caffemodel: str
    description: str          # one line: layout, layers, size, sha1
    sha1: str
    weights: AlexNetWeights
    mean: str = None
    mean_image: np.ndarray = None     # RGB [256, 256, 3], or None: Caffe's channel means


def load(caffemodel, mean=None):
    """Reads and checks a caffemodel (and a mean file): a `Loaded`, or a one-line CaffeError.

    Needs neither Caffe nor TensorFlow.
    """
    mean_image = read_mean(mean) if mean else None
    net = read_caffemodel(caffemodel)
    weights = alexnet_weights(net, caffemodel)
    return Loaded(caffemodel, describe(net, caffemodel), net.sha1, weights, mean, mean_image)


def is_published(net):
    """Whether `net` was read from the published bvlc_alexnet.caffemodel (its sha1)."""
    return net.sha1 == PUBLISHED_SHA1


def describe(net, path):
    return (f"{os.path.basename(path)}: {net.layout} layout, {len(net.layers)} layers, "
            f"{net.size / 1e6:.1f} MB, sha1 {net.sha1}"
            + (" (the published bvlc_alexnet.caffemodel)" if is_published(net) else
               " (not the published bvlc_alexnet.caffemodel's sha1)"))
