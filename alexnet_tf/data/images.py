"""Image files as the Python API reads them on any Keras backend, and why a file is refused.

The refusals (`EMPTY`, `NOT_AN_IMAGE`, `DAMAGED`, `too_large`) are every tool's and
`load_image`'s. On JAX and PyTorch, where no TensorFlow is imported, `load_image` decodes
with Pillow and resizes with `keras.ops.image`, the steps of `preprocessing.decode_256`:
RGB, then the shorter side to 256 (bilinear, antialiased only when shrinking by more than
2x) and the central 256x256, or both sides squashed to 256. The resize equals
TensorFlow's; JPEG pixels differ by a few levels of 255 (TensorFlow decodes with libjpeg's
fast integer IDCT, Pillow with the accurate one; tests/backend_cases.py bounds it). Imports no
TensorFlow.
"""

import io

import numpy as np

from alexnet_tf import paper
from alexnet_tf.config import MAX_MEGAPIXELS, SQUASH

# Why a file is not classified, as every tool and `load_image` say it ("<file> is ...").
EMPTY = "an empty file, not an image"
NOT_AN_IMAGE = "not a JPEG, PNG, GIF or BMP image"
DAMAGED = "a truncated or damaged image (its header reads, its pixels do not)"
FORMATS = ("JPEG", "PNG", "GIF", "BMP")        # what TensorFlow's decode_image reads


def too_large(height, width, max_megapixels=MAX_MEGAPIXELS):
    """The one-line reason an image of this size is refused, or None."""
    if height * width <= max_megapixels * 1e6:
        return None
    return f"{width} x {height} pixels, larger than the {max_megapixels:g}-megapixel limit"


def decode_rgb(data, max_megapixels=MAX_MEGAPIXELS):
    """JPEG/PNG/GIF/BMP bytes -> uint8 numpy [height, width, 3] with Pillow (a GIF's first
    frame; grey and alpha as TensorFlow's decode_image makes them RGB). Raises ValueError with
    EMPTY, NOT_AN_IMAGE, `too_large`'s reason or DAMAGED."""
    from PIL import Image
    if not data:
        raise ValueError(EMPTY)
    try:
        image = Image.open(io.BytesIO(data))
    except Exception:                    # Pillow's UnidentifiedImageError and the like
        raise ValueError(NOT_AN_IMAGE) from None
    if image.format not in FORMATS:
        raise ValueError(NOT_AN_IMAGE)
    problem = too_large(image.height, image.width, max_megapixels)
    if problem:
        raise ValueError(problem)
    try:
        image.load()
        return np.asarray(image.convert("RGB"), np.uint8)
    except (OSError, SyntaxError, ValueError):
        raise ValueError(DAMAGED) from None


def image_256(image, resize):
    """uint8 [h, w, 3] -> float32 numpy [256, 256, 3], resized as `preprocessing.image_256`."""
    from keras import ops
    side = paper.CENTRAL_CROP
    x = ops.cast(ops.convert_to_tensor(image), "float32")
    if resize == SQUASH:
        return np.asarray(ops.convert_to_numpy(
            ops.image.resize(x, (side, side), interpolation="bilinear", antialias=False)))
    height, width = image.shape[:2]
    scale = np.float32(paper.RESIZE_SHORTER_SIDE) / np.float32(min(height, width))
    new = np.maximum(np.round(np.float32([height, width]) * scale).astype(np.int64),
                     paper.RESIZE_SHORTER_SIDE)
    resized = ops.image.resize(x, (int(new[0]), int(new[1])), interpolation="bilinear",
                               antialias=bool(scale < 0.5))
    return centre_crop(np.asarray(ops.convert_to_numpy(resized)), side)


def centre_crop(image, size):
    """The centre `size` x `size` patch of a numpy image [h, w, 3]."""
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[top:top + size, left:left + size, :]
