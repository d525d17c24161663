"""The published bvlc_alexnet weights: fetched on request, sha1-checked, converted once, cached.

The only module that touches the network, and only when a user asks for
`weights="bvlc_alexnet"` (or runs `alexnet-import` without `--caffemodel`).
Cache layout, in the Keras cache (`$KERAS_HOME`, default `~/.keras`):

    models/bvlc_alexnet.caffemodel     the published file, its sha1 checked
    models/bvlc_alexnet.weights.h5     the Caffe-exact model's weights, converted from it

Both are written under a temporary name and renamed into place, and a failed
download or a wrong file leaves nothing behind.

Example:

    path = fetch_caffemodel()                       # the cached file, or a download
    h5 = cached_weights(convert=write_h5)           # see applications.AlexNet
"""

import hashlib
import os

from alexnet_tf import errors, files
from alexnet_tf.model import caffe

URL_VARIABLE = "ALEXNET_TF_WEIGHTS_URL"      # a mirror of bvlc_alexnet.caffemodel
CACHE_SUBDIR = "models"
CAFFEMODEL = "bvlc_alexnet.caffemodel"
WEIGHTS_H5 = "bvlc_alexnet.weights.h5"
_DOWNLOADING = ".download"


class WeightsError(errors.UserError):
    """Published weights that could not be fetched or checked; at most three lines with the fix."""


def cache_dir():
    """The Keras cache folder: $KERAS_HOME, or ~/.keras."""
    return os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))


def cache_path(name):
    """Where `name` (CAFFEMODEL or WEIGHTS_H5) lives in the cache."""
    return os.path.join(cache_dir(), CACHE_SUBDIR, name)


def url():
    """The caffemodel's URL: $ALEXNET_TF_WEIGHTS_URL, or the published one."""
    return os.environ.get(URL_VARIABLE) or caffe.PUBLISHED_URL


def sha1_of(path):
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manual(sha1):
    return (f"Download {CAFFEMODEL} elsewhere (sha1 {sha1}) and pass "
            f"weights='/path/{CAFFEMODEL}' (alexnet-import: --caffemodel=PATH).")


def fetch_caffemodel(origin=None, sha1=None):
    """The path of the cached caffemodel, downloaded from `origin` first if it is not cached.

    Args:
      origin: The URL (default: `url()`).
      sha1: The file's expected sha1 (default: the published file's,
        `caffe.PUBLISHED_SHA1`). A download whose sha1 differs is deleted and
        refused.

    Returns:
      The cached file's path (`cache_path(CAFFEMODEL)`).

    Raises:
      WeightsError: no network, a server that fails, or a file with another
        sha1; nothing is left in the cache.
    """
    import keras

    sha1 = sha1 or caffe.PUBLISHED_SHA1
    final = cache_path(CAFFEMODEL)
    if os.path.exists(final) and sha1_of(final) == sha1:
        return final
    origin = origin or url()
    # get_file checks md5/sha256 only: it downloads under a temporary name, we check the sha1
    # and rename, so the cache never holds a partial or wrong file under the final name.
    partial = final + _DOWNLOADING
    os.makedirs(os.path.dirname(final), exist_ok=True)   # else get_file falls back to /tmp
    if os.path.exists(partial):
        os.remove(partial)
    try:
        keras.utils.get_file(os.path.basename(partial), origin, cache_subdir=CACHE_SUBDIR,
                             cache_dir=cache_dir())
    except (Exception, KeyboardInterrupt) as error:
        if os.path.exists(partial):
            os.remove(partial)
        if isinstance(error, KeyboardInterrupt):
            raise
        if isinstance(error, OSError) and errors.is_disk_full(error):
            raise files.disk_full(final, 250e6, "free space and call again") from None
        reason = errors.first_line(error, 200)
        raise WeightsError(f"could not download {CAFFEMODEL} from {origin} ({reason}).\n"
                           f"{_manual(sha1)}") from None
    found = sha1_of(partial)
    if found != sha1:
        os.remove(partial)
        raise WeightsError(f"{origin} gave a file with sha1 {found}, not the published {sha1}; "
                           "it was deleted.\n" + _manual(sha1))
    os.replace(partial, final)
    return final


def cached_weights(convert, origin=None, sha1=None):
    """The cached `.weights.h5` of bvlc_alexnet, made first if absent.

    Args:
      convert: A function (caffemodel path, h5 path) that writes the weights
        file; it is given a temporary `.weights.h5` name, renamed when done.
      origin, sha1: As for `fetch_caffemodel`.
    """
    final = cache_path(WEIGHTS_H5)
    if os.path.exists(final):
        return final
    caffemodel = fetch_caffemodel(origin, sha1)
    temporary = os.path.join(os.path.dirname(final), f"{files.TEMPORARY_PREFIX}{os.getpid()}-"
                             f"{WEIGHTS_H5}")
    try:
        convert(caffemodel, temporary)
        os.replace(temporary, final)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return final
