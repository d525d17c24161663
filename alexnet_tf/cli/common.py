"""What every CLI main does the same way."""

import tensorflow as tf
from absl import flags, logging

from alexnet_tf import preprocessing


def quiet_libraries():
    """INFO chatter from TFDS and TF off, unless the user asked for --verbosity."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


NOT_AN_IMAGE = "not a JPEG, PNG, GIF or BMP image"


def define_max_megapixels(help_text="Image files larger than this many megapixels (read from "
                                    "their headers) are refused before decoding."):
    """The --max_megapixels flag of a CLI that reads image files (the limit is preprocessing's)."""
    flags.DEFINE_float("max_megapixels", preprocessing.MAX_MEGAPIXELS, help_text,
                       lower_bound=0.001)


def image_problem(data, max_megapixels):
    """None, or why these encoded bytes will not be classified (one line), from the header."""
    try:
        height, width = (int(v) for v in preprocessing.encoded_size(data).numpy())
    except tf.errors.OpError:
        return NOT_AN_IMAGE
    return preprocessing.too_large(height, width, max_megapixels)


def serving_error(error):
    """The one-line reason of a request the served graph refused (InvalidArgumentError)."""
    message = str(getattr(error, "message", error))
    if "megapixel limit" in message:
        return message.split("[", 1)[-1].split("]", 1)[0]
    return NOT_AN_IMAGE


def read_file(path):
    """(bytes, None), or (None, a one-line reason) when the file cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(), None
    except OSError as error:
        return None, f"cannot read it ({error.strerror})"
