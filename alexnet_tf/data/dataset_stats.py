"""Training-set statistics (mean image, channel mean, RGB PCA) and the normalisation built on them.

Statistics are computed once per dataset from its training split and stored
beside it (`alexnet_tf_stats.json`, `alexnet_tf_mean_image.npy`); a training
run copies them into its run directory (`rundir`).

`Normalization` is the one place where the statistics meet pixels: the train
pipeline, the eval pipeline and the serving graph all subtract the mean and
divide by the scale through it.
"""

import dataclasses
import io
import os
import tokenize

import numpy as np
import tensorflow as tf

from alexnet_tf import errors, files, paper
from alexnet_tf.config import INPUT_SCALES, MEAN_MODES
from alexnet_tf.data import preprocessing, sources
STATS_FILE = "alexnet_tf_stats.json"
MEAN_IMAGE_FILE = "alexnet_tf_mean_image.npy"
PIXEL_SCALE = 255.0  # PCA is computed on RGB in [0, 1]; offsets are applied in [0, 255].


class StatsError(sources.DataError):
    """Statistics files that exist but cannot be read; the message is one line."""


@dataclasses.dataclass
class Stats:
    """Training-set statistics of the 256x256 images (pixel values in [0, 255]).

    Attributes:
      mean_image: float32 [256, 256, 3], the mean image (the paper's choice).
      mean_channel: float32 [3], the per-channel mean.
      eigenvalues: float32 [3], of the RGB covariance with pixels in [0, 1], descending.
      eigenvectors: float32 [3, 3], column i belongs to eigenvalue i.
      num_images: how many training images they were computed from.
    """
    mean_image: np.ndarray
    mean_channel: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    num_images: int

    def mean(self, mode):
        """The mean to subtract: 'image' [256, 256, 3] or 'channel' [3]."""
        if mode not in MEAN_MODES:
            raise ValueError(f"mean mode must be one of {', '.join(MEAN_MODES)}, got {mode!r}.")
        return self.mean_image if mode == "image" else self.mean_channel

    def scale(self, mode):
        """What mean-subtracted pixels are divided by: 'none' 1.0, 'std' the per-channel std."""
        if mode not in INPUT_SCALES:
            raise ValueError(f"input scale must be one of {', '.join(INPUT_SCALES)}, got {mode!r}.")
        if mode == "none":
            return np.ones(3, np.float32)
        covariance = self.eigenvectors @ np.diag(self.eigenvalues) @ self.eigenvectors.T
        return (np.sqrt(np.diag(covariance)) * PIXEL_SCALE).astype(np.float32)


def compute_stats(source, split="train", max_images=5000):
    """Mean image, channel mean and RGB PCA over (the first `max_images` of) a split."""
    ds = source.encoded(split).take(max_images)
    ds = ds.map(lambda x, y: preprocessing.decode_256(x), num_parallel_calls=tf.data.AUTOTUNE)

    def moments(images):
        pixels = tf.reshape(tf.cast(images, tf.float64) / PIXEL_SCALE, [-1, 3])
        return (tf.reduce_sum(tf.cast(images, tf.float64), axis=0), tf.reduce_sum(pixels, axis=0),
                tf.matmul(pixels, pixels, transpose_a=True), tf.shape(images, tf.int64)[0])

    ds = ds.batch(64).map(moments).prefetch(2)
    size = paper.CENTRAL_CROP
    image_sum, pixel_sum = np.zeros((size, size, 3)), np.zeros(3)
    outer, count = np.zeros((3, 3)), 0
    for batch_image_sum, batch_pixel_sum, batch_outer, n in ds.as_numpy_iterator():
        image_sum += batch_image_sum
        pixel_sum += batch_pixel_sum
        outer += batch_outer
        count += int(n)
    if count == 0:
        raise sources.DataError(f"split {split!r} of {source.name} has no images to compute "
                                "statistics")
    num_pixels = count * size * size
    mean01 = pixel_sum / num_pixels
    covariance = outer / num_pixels - np.outer(mean01, mean01)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    return Stats(mean_image=(image_sum / count).astype(np.float32),
                 mean_channel=(mean01 * PIXEL_SCALE).astype(np.float32),
                 eigenvalues=eigenvalues[order].astype(np.float32),
                 eigenvectors=eigenvectors[:, order].astype(np.float32), num_images=count)


def save_stats(stats, folder):
    """Writes `stats` into `folder` (each file atomically)."""
    buffer = io.BytesIO()
    np.save(buffer, stats.mean_image)
    files.atomic_write(os.path.join(folder, MEAN_IMAGE_FILE), buffer.getvalue())
    summary = {"mean_channel": stats.mean_channel.tolist(), "eigenvalues": stats.eigenvalues.tolist(),
               "eigenvectors": stats.eigenvectors.tolist(), "num_images": stats.num_images,
               "pixel_scale_of_pca": "RGB in [0, 1]"}
    files.atomic_write_json(os.path.join(folder, STATS_FILE), summary)


def load_stats(folder):
    """The stats saved in `folder`, None if there are none, or `StatsError` if they are damaged."""
    summary_path, mean_path = (os.path.join(folder, name) for name in (STATS_FILE, MEAN_IMAGE_FILE))
    if not (os.path.exists(summary_path) and os.path.exists(mean_path)):
        return None
    summary = files.read_json(summary_path)
    try:
        if not isinstance(summary, dict):
            raise ValueError(f"{STATS_FILE} is not a JSON object")
        with np.errstate(all="ignore"):                 # out-of-range values are refused below
            stats = _stats_of(summary, mean_path)
        expected = {"mean_image": (paper.RESIZE_SHORTER_SIDE, paper.RESIZE_SHORTER_SIDE, 3),
                    "mean_channel": (3,), "eigenvalues": (3,), "eigenvectors": (3, 3)}
        for name, shape in expected.items():
            value = getattr(stats, name)
            if value.shape != shape or not np.issubdtype(value.dtype, np.floating) \
                    or not np.isfinite(value).all():
                raise ValueError(f"{name} is not {shape} finite numbers")
        if isinstance(stats.num_images, bool) or not isinstance(stats.num_images, int) \
                or stats.num_images < 1:
            raise ValueError("num_images is not a count")
    except (OSError, EOFError, KeyError, TypeError, ValueError, SyntaxError,
            tokenize.TokenError) as error:
        raise StatsError(f"the statistics in {folder} ({STATS_FILE}, {MEAN_IMAGE_FILE}) are "
                         f"damaged ({errors.first_line(error, 120)})") from None
    return stats


def _stats_of(summary, mean_path):
    """The `Stats` of a statistics summary and a mean image file (their shapes not yet checked)."""
    with open(mean_path, "rb") as f:           # the header first: nothing huge is allocated
        version = np.lib.format.read_magic(f)
        header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                  np.lib.format.read_array_header_2_0)
        shape, _, dtype = header(f)
        if shape != (paper.RESIZE_SHORTER_SIDE, paper.RESIZE_SHORTER_SIDE, 3) \
                or dtype != np.float32:
            raise ValueError(f"{MEAN_IMAGE_FILE} holds {dtype} {shape}")
    return Stats(mean_image=np.load(mean_path, allow_pickle=False),
                 mean_channel=np.asarray(summary["mean_channel"], np.float32),
                 eigenvalues=np.asarray(summary["eigenvalues"], np.float32),
                 eigenvectors=np.asarray(summary["eigenvectors"], np.float32),
                 num_images=summary["num_images"])


def stats_for(source, split="train", max_images=5000):
    """The source's stats: loaded from beside it, or computed once and stored there."""
    try:
        stats = load_stats(source.stats_dir)
    except StatsError as error:
        sources.notice(f"Ignoring {error}: computing them again.")
        stats = None
    if stats is None:
        sources.notice(f"Computing the mean and RGB PCA of {source.name}/{split} (once).")
        stats = compute_stats(source, split, max_images)
        save_stats(stats, source.stats_dir)
    return stats


class Normalization:
    """What the network's input is: a 256x256 image minus the mean, divided by the scale.

    Built from a training set's statistics and the run's three options. The
    training pipeline subtracts the mean before it crops and adds the PCA
    colour offset before it divides (section 4.1's order); evaluation and
    serving call it whole.

    Args:
      stats: The training set's `Stats`.
      mean_mode: "image" (the paper's mean image) or "channel".
      input_scale: "none" (the paper's raw pixels) or "std" (per-channel std).
      resize: How an image becomes 256x256 (`preprocessing.RESIZES`):
        "shorter_side" (the paper) or "squash" (Caffe).

    Example:

    >>> normalise = Normalization(stats, "image", "std")
    >>> network_input = normalise(normalise.decode_256(encoded))
    """

    def __init__(self, stats, mean_mode="image", input_scale="none",
                 resize=preprocessing.SHORTER_SIDE):
        self.stats, self.mean_mode, self.input_scale = stats, mean_mode, input_scale
        self.resize = preprocessing.check_resize(resize)
        self.mean = tf.constant(stats.mean(mean_mode), tf.float32)
        self.scale = tf.constant(stats.scale(input_scale), tf.float32)

    @classmethod
    def of(cls, config, stats):
        """The `Normalization` of a `TrainConfig`'s preprocessing settings over `stats`."""
        return cls(stats, config.mean_mode, config.input_scale, config.resize)

    def image_256(self, image):
        """A decoded image [h, w, 3] as float32 [256, 256, 3], resized the run's way."""
        return preprocessing.image_256(image, self.resize)

    def decode_256(self, encoded):
        """Encoded image bytes as float32 [256, 256, 3], resized the run's way."""
        return preprocessing.decode_256(encoded, self.resize)

    def subtract_mean(self, image):
        """[256, 256, 3] (or a batch of them) minus the mean."""
        return image - self.mean

    def divide(self, image):
        """Mean-subtracted pixels (any crop) divided by the scale."""
        return image / self.scale

    def __call__(self, image):
        """A 256x256 image (or batch) as the network takes it, before cropping."""
        return self.divide(self.subtract_mean(image))

    def pca_offset(self, seed):
        """Section 4.1's colour offset for one image, in pixel units (add before `divide`)."""
        return PIXEL_SCALE * preprocessing.pca_offset(seed, tf.constant(self.stats.eigenvalues),
                                                      tf.constant(self.stats.eigenvectors))
