"""RandAugment (Cubuk et al., 2020) with stateless draws: `--augment=randaugment`.

Each training image gets `num_ops` operations, each chosen uniformly from `OPS` and applied at
one magnitude m = `magnitude` / 30 (the paper's scale), with a random sign where the operation
has one. Every draw follows from the image's seed, as the crops, flips and PCA offsets do, so a
resumed run augments exactly as an uninterrupted one. Keras' `RandAugment` layer draws from a
stateful generator instead, which would break that.

The operations work on float32 RGB images in [0, 255] (before the mean is subtracted), and keep
them in that range:

| operation | at magnitude m |
|---|---|
| identity | the image |
| autocontrast | each channel stretched from its min..max to 0..255 |
| brightness | x (1 +- 0.9 m) |
| color | blended with its grey by 1 +- 0.9 m |
| contrast | blended with its mean grey by 1 +- 0.9 m |
| solarize | values >= 256 (1 - m) inverted (255 - x) |
| posterize | kept to 8 - round(4 m) bits |
| rotate | +- 30 m degrees about the centre |
| shear_x, shear_y | +- 0.3 m |
| translate_x, translate_y | +- 0.45 m of the side |

Geometric operations fill what they uncover with grey (128).
"""

import math

import tensorflow as tf

OPS = ("identity", "autocontrast", "brightness", "color", "contrast", "solarize", "posterize",
       "rotate", "shear_x", "shear_y", "translate_x", "translate_y")
MAX_MAGNITUDE = 30.0          # the paper's scale: --randaugment_magnitude in [0, 30]
FILL = 128.0


def _grey(image):
    return tf.reduce_sum(image * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)


def _blend(image, other, factor):
    return tf.clip_by_value(other + factor * (image - other), 0.0, 255.0)


def _transform(image, matrix):
    """`image` [h, w, 3] sampled through a 3x3 projective `matrix` (output -> input, pixels)."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    row = tf.reshape(matrix, [9])[:8] / matrix[2, 2]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=row[None], output_shape=tf.stack([h, w]),
        fill_value=FILL, interpolation="BILINEAR", fill_mode="CONSTANT")
    return out[0]


def _about_centre(image, matrix):
    """`matrix` (output -> input) applied about the image's centre instead of its corner."""
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    to_centre = tf.stack([[1.0, 0.0, -w / 2], [0.0, 1.0, -h / 2], [0.0, 0.0, 1.0]])
    back = tf.stack([[1.0, 0.0, w / 2], [0.0, 1.0, h / 2], [0.0, 0.0, 1.0]])
    return _transform(image, back @ matrix @ to_centre)


def apply_op(index, image, m, sign):
    """Operation `OPS[index]` of `image` (float32 [h, w, 3] in [0, 255]) at magnitude `m` in
    [0, 1], `sign` +-1 where the operation has a direction."""
    one, zero = tf.constant(1.0), tf.constant(0.0)
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)

    def autocontrast():
        low = tf.reduce_min(image, axis=[0, 1], keepdims=True)
        high = tf.reduce_max(image, axis=[0, 1], keepdims=True)
        return tf.where(high > low, (image - low) * 255.0 / tf.maximum(high - low, 1e-6), image)

    def posterize():
        shift = tf.cast(tf.round(4.0 * m), tf.int32)
        pixels = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.int32)
        return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(pixels, shift), shift),
                       tf.float32)

    def rotate():
        angle = sign * m * 30.0 * math.pi / 180.0
        c, s = tf.cos(angle), tf.sin(angle)
        return _about_centre(image, tf.stack([[c, -s, zero], [s, c, zero], [zero, zero, one]]))

    branches = [
        lambda: image,
        autocontrast,
        lambda: tf.clip_by_value(image * (1.0 + sign * 0.9 * m), 0.0, 255.0),
        lambda: _blend(image, tf.broadcast_to(_grey(image), tf.shape(image)),
                       1.0 + sign * 0.9 * m),
        lambda: _blend(image, tf.fill(tf.shape(image), tf.reduce_mean(_grey(image))),
                       1.0 + sign * 0.9 * m),
        lambda: tf.where(image >= 256.0 * (1.0 - m), 255.0 - image, image),
        posterize,
        rotate,
        lambda: _about_centre(image, tf.stack([[one, sign * 0.3 * m, zero], [zero, one, zero],
                                               [zero, zero, one]])),
        lambda: _about_centre(image, tf.stack([[one, zero, zero], [sign * 0.3 * m, one, zero],
                                               [zero, zero, one]])),
        lambda: _transform(image, tf.stack([[one, zero, sign * 0.45 * m * w], [zero, one, zero],
                                            [zero, zero, one]])),
        lambda: _transform(image, tf.stack([[one, zero, zero], [zero, one, sign * 0.45 * m * h],
                                            [zero, zero, one]])),
    ]
    out = tf.switch_case(tf.cast(index, tf.int32), branches)
    return tf.ensure_shape(out, image.shape)


def rand_augment(image, seed, num_ops=2, magnitude=9.0):
    """`num_ops` operations drawn from `seed` (a stateless seed), each at `magnitude` / 30."""
    m = tf.constant(float(magnitude) / MAX_MAGNITUDE)
    for s in tf.unstack(tf.random.experimental.stateless_split(seed, max(int(num_ops), 1))
                        )[:int(num_ops)]:
        which, direction = tf.unstack(tf.random.experimental.stateless_split(s, 2))
        index = tf.random.stateless_uniform([], which, 0, len(OPS), dtype=tf.int32)
        sign = tf.where(tf.random.stateless_uniform([], direction) < 0.5, -1.0, 1.0)
        image = apply_op(index, image, m, sign)
    return image
