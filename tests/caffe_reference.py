"""bvlc_alexnet-shaped caffemodels (random weights) and Caffe's forward pass, in numpy.

Shared by the import tests and the Python API's tests. The caffemodels are
written with a protobuf wire-format writer of the tests' own (varints, keys,
packed floats: nothing shared with the reader), in Caffe's V1 layout
(`layers`, field 2) and its newer one (`layer`, field 100). The reference is
Caffe's forward pass in numpy (float64): BGR input minus the mean image, the
centre 227 crop, grouped convolutions, LRN across all channels with alpha / n
and k = 1, ceil-mode max pooling, C,H,W flattening before fc6.
"""

import os
import struct

import numpy as np

import helpers

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
    layers = caffe_layers(weights, image_rgb, mean_bgr_chw)
    return layers["fc7"], layers["fc8"]


def caffe_layers(weights, image_rgb, mean_bgr_chw):
    """Caffe's test-time forward pass: {"pool5" (C, H, W), "fc7" (after ReLU), "fc8"}, float64.

    `image_rgb` is 256x256 (the centre 227 is cropped here); `mean_bgr_chw` a
    3x256x256 mean image, or Caffe's channel means broadcast to it.
    """
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
    pool5 = x
    fc6 = relu(w["fc6"][0] @ x.reshape(-1) + w["fc6"][1])       # C, H, W order
    fc7 = relu(w["fc7"][0] @ fc6 + w["fc7"][1])
    return {"pool5": pool5, "fc7": fc7, "fc8": w["fc8"][0] @ fc7 + w["fc8"][1]}


def assert_close(actual, expected, rtol=1e-4):
    """Equal to `rtol` relative to the largest magnitude (float32 against float64)."""
    helpers.assert_close(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


# Caffe's published per-channel means, B, G, R (its ilsvrc_2012_mean.npy averaged), typed here.
CAFFE_MEAN_BGR = np.array([104.007, 116.669, 122.679], np.float32)


def bvlc_test_case(folder):
    """A bvlc_alexnet-shaped caffemodel of random weights in `folder` (fc8 scaled down so the
    log-probabilities are O(1), where 2e-3 is a meaningful tolerance), a random 256x256 image,
    and this module's Caffe forward pass of it: {caffemodel, weights, image, reference}."""
    weights = random_alexnet(seed=3)
    weights["fc8"] = tuple(np.float32(0.02) * w for w in weights["fc8"])
    path = os.path.join(str(folder), "random.caffemodel")
    with open(path, "wb") as f:
        f.write(caffemodel_bytes(weights, v1=False))
    image = np.random.default_rng(4).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    mean = np.broadcast_to(CAFFE_MEAN_BGR[:, None, None], (3, 256, 256))
    return dict(caffemodel=path, weights=weights, image=image,
                reference=caffe_layers(weights, image, mean))


def crop(image):
    """The centre 227x227 of a 256x256 image (Caffe's test-time crop)."""
    offset = (256 - 227) // 2
    return image[offset:offset + 227, offset:offset + 227]


def log_softmax(logits):
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())
