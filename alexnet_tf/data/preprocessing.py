"""The paper's preprocessing and augmentation (sections 2 and 4.1), as pure TF functions.

Every function takes and returns tensors, has no Python in the per-image path,
and draws randomness only from an explicit stateless `seed` (a [2] int tensor),
so a pipeline built from them is reproducible from one integer.

Order, per image: decode -> shorter side to 256 -> central 256x256 -> float ->
subtract the training-set mean -> (training) random 224 crop, random horizontal
flip, PCA colour offset / (evaluation) centre 224 crop or the ten crops.
"""

import tensorflow as tf

from alexnet_tf import paper
from alexnet_tf.config import MAX_MEGAPIXELS, RESIZES, SHORTER_SIDE, SQUASH  # noqa: F401
from alexnet_tf.data.images import DAMAGED, EMPTY, NOT_AN_IMAGE, too_large  # noqa: F401


def _unsigned(encoded, start, length, big_endian):
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(encoded, start, length), tf.uint8), tf.int64)
    weights = tf.constant([256 ** i for i in range(length)], tf.int64)
    return tf.reduce_sum(raw * (tf.reverse(weights, [0]) if big_endian else weights))


def encoded_size(encoded):
    """(height, width), int64 [2], of JPEG/PNG/GIF/BMP bytes, read from the header alone.

    [0, 0] when the format is not one of those (decoding will say so).
    """
    encoded = tf.convert_to_tensor(encoded, tf.string)
    length = tf.strings.length(encoded)

    def png():       # IHDR: width, height as big-endian uint32 at bytes 16 and 20
        return tf.stack([_unsigned(encoded, 20, 4, True), _unsigned(encoded, 16, 4, True)])

    def gif():       # logical screen: width, height as little-endian uint16 at bytes 6 and 8
        return tf.stack([_unsigned(encoded, 8, 2, False), _unsigned(encoded, 6, 2, False)])

    def bmp():       # BITMAPINFOHEADER: width, height as little-endian int32 at bytes 18 and 22
        height = _unsigned(encoded, 22, 4, False)
        height = tf.where(height >= 2 ** 31, 2 ** 32 - height, height)   # top-down: negative
        return tf.stack([height, _unsigned(encoded, 18, 4, False)])

    def jpeg():      # the frame header (SOF), found by TF without decoding
        return tf.cast(tf.image.extract_jpeg_shape(encoded)[:2], tf.int64)

    return tf.case([
        (tf.logical_and(length >= 24, tf.equal(tf.strings.substr(encoded, 0, 4), b"\x89PNG")),
         png),
        (tf.logical_and(length >= 10, tf.equal(tf.strings.substr(encoded, 0, 3), b"GIF")), gif),
        (tf.logical_and(length >= 26, tf.equal(tf.strings.substr(encoded, 0, 2), b"BM")), bmp),
        (tf.io.is_jpeg(encoded), jpeg)], default=lambda: tf.zeros([2], tf.int64), exclusive=False)


def within_limit(size, max_megapixels=MAX_MEGAPIXELS):
    """A bool tensor: does an image of `size` ([height, width], from `encoded_size`) fit?"""
    return size[0] * size[1] <= int(max_megapixels * 1e6)


def image_problem(data, max_megapixels=MAX_MEGAPIXELS):
    """None, or why these encoded bytes will not be decoded (one line), from the header alone:
    EMPTY, NOT_AN_IMAGE or `too_large`'s reason. (A header that reads over damaged pixels is
    found by decoding: DAMAGED.)"""
    if not data:
        return EMPTY
    try:
        height, width = (int(v) for v in encoded_size(data).numpy())
    except tf.errors.OpError:
        return NOT_AN_IMAGE
    if height <= 0 or width <= 0:
        return NOT_AN_IMAGE
    return too_large(height, width, max_megapixels)


def decode_rgb(encoded, max_megapixels=None):
    """Decodes JPEG/PNG/GIF/BMP bytes into uint8 [height, width, 3] (grey, CMYK, alpha -> RGB).

    With `max_megapixels`, an image whose header says it is larger fails with an
    InvalidArgumentError ("W x H pixels, larger than the N-megapixel limit")
    before anything is decoded or allocated.
    """
    if max_megapixels is not None:
        size = encoded_size(encoded)
        check = tf.debugging.Assert(
            within_limit(size, max_megapixels),
            [tf.strings.format("{} x {} pixels, larger than the " + f"{max_megapixels:g}" +
                               "-megapixel limit", [size[1], size[0]])])
        with tf.control_dependencies([check]):
            encoded = tf.identity(encoded)
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def resize_shorter_side(image, size=paper.RESIZE_SHORTER_SIDE):
    """Scales `image` (any dtype) so its shorter side is `size`, keeping the aspect ratio.

    Bilinear; antialiased only when shrinking by more than 2x (where bilinear
    sampling would skip pixels), because antialiasing costs 5x the time of the
    whole rest of the pipeline (measured: 400 vs 2,200 images/s on 2 cores).
    Returns float32 in the input's value range.
    """
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.minimum(height, width)
    new_size = tf.maximum(tf.cast(tf.round(tf.stack([height, width]) * scale), tf.int32), size)
    return tf.cond(scale < 0.5,
                   lambda: tf.image.resize(image, new_size, method="bilinear", antialias=True),
                   lambda: tf.image.resize(image, new_size, method="bilinear"))


def check_resize(resize):
    """`resize` if it is one of RESIZES, else a ValueError naming them."""
    if resize not in RESIZES:
        raise ValueError(f"resize must be one of {', '.join(RESIZES)}, got {resize!r}.")
    return resize


def image_256(image, resize=SHORTER_SIDE):
    """A decoded image [h, w, 3] as float32 [256, 256, 3].

    Args:
      image: Any dtype, [h, w, 3].
      resize: "shorter_side" (section 2: the shorter side to 256, then the
        central 256x256) or "squash" (Caffe's: both sides to 256, bilinear,
        not antialiased, the aspect ratio not kept).
    """
    if check_resize(resize) == SQUASH:
        side = paper.CENTRAL_CROP
        squashed = tf.image.resize(image, [side, side], method="bilinear")
        squashed.set_shape([side, side, 3])
        return squashed
    return centre_crop(resize_shorter_side(image, paper.RESIZE_SHORTER_SIDE), paper.CENTRAL_CROP)


def decode_256(encoded, resize=SHORTER_SIDE):
    """Section 2 on encoded bytes: decode, then `image_256`. float32 [256, 256, 3]."""
    return image_256(decode_rgb(encoded), resize)


def to_uint8(image):
    """Float pixel values (0-255 scale) as uint8: rounded, clipped to [0, 255]."""
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def centre_crop(image, size=paper.IMAGE_SIZE):
    """The centre `size` x `size` patch of an image [h, w, 3] or a batch [..., h, w, 3]."""
    shape = tf.shape(image)
    top, left = (shape[-3] - size) // 2, (shape[-2] - size) // 2
    cropped = image[..., top:top + size, left:left + size, :]
    cropped.set_shape(image.shape[:-3].concatenate([size, size, 3]))
    return cropped


def random_crop_and_flip(image, seed, size=paper.IMAGE_SIZE):
    """Section 4.1: a random `size` crop and, with probability 1/2, its horizontal reflection."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = tf.image.stateless_random_crop(image, [size, size, 3], seed=crop_seed)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def pca_offset(seed, eigenvalues, eigenvectors, stddev=paper.PCA_STDDEV):
    """Section 4.1: the RGB offset [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T, a_i ~ N(0, stddev).

    Args:
      seed: Stateless seed, [2] int.
      eigenvalues: [3] eigenvalues l_i of the RGB covariance.
      eigenvectors: [3, 3], column i is the eigenvector p_i.
      stddev: Standard deviation of the a_i (0.1 in the paper).

    Returns:
      float32 [3]: add to every pixel of one image.
    """
    alphas = tf.random.stateless_normal([3], seed=seed, stddev=stddev)
    return tf.linalg.matvec(tf.cast(eigenvectors, tf.float32), alphas * tf.cast(eigenvalues, tf.float32))


def ten_crop_offsets(height, width, size=paper.IMAGE_SIZE):
    """(top, left) of the paper's five patches: four corners, then the centre."""
    return [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size),
            ((height - size) // 2, (width - size) // 2)]


def ten_crops(image, size=paper.IMAGE_SIZE):
    """Section 4.1: the four corners and the centre, then their reflections.

    [h, w, 3] -> [10, size, size, 3]; a batch [B, h, w, 3] -> [B, 10, size, size, 3].
    """
    height, width = image.shape[-3], image.shape[-2]
    patches = tf.stack([image[..., top:top + size, left:left + size, :]
                        for top, left in ten_crop_offsets(height, width, size)], axis=-4)
    crops = tf.concat([patches, tf.reverse(patches, axis=[-2])], axis=-4)
    assert crops.shape[-4] == paper.NUM_TEST_CROPS
    return crops


def thumbnail(encoded, size):
    """JPEG/PNG/... bytes -> uint8 [size, size, 3]: the central square (as evaluation sees it)."""
    image = tf.image.resize(decode_256(encoded), [size, size], method="area")
    return to_uint8(image).numpy()
