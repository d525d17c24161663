"""What every CLI main does the same way."""

from absl import flags, logging


def quiet_libraries():
    """INFO chatter from TFDS and TF off, unless the user asked for --verbosity."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
