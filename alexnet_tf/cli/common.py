"""What every CLI main does the same way."""

from absl import flags, logging


def quiet_libraries():
    """INFO chatter from TFDS and TF off, unless the user asked for --verbosity."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


NOT_AN_IMAGE = "not a JPEG, PNG, GIF or BMP image"


def read_file(path):
    """(bytes, None), or (None, a one-line reason) when the file cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(), None
    except OSError as error:
        return None, f"cannot read it ({error.strerror})"
