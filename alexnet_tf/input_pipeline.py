"""Data sources, training-set statistics and the tf.data pipelines.

Sources, selected by one string (`--dataset`):

* a TFDS dataset name (`alexnet_shapes`, the built-in offline dataset;
  `imagenet2012` from TFDS' manual directory; any prepared supervised image
  dataset). Nothing is ever downloaded: a dataset that is not prepared in
  `data_dir` fails with one line saying how to prepare it.
* `image_folder:ROOT`, a folder tree `ROOT/<split>/<class>/*.jpg|png|...`.

Statistics (mean, RGB PCA) are computed once per dataset from its training split
and stored beside it (`alexnet_tf_stats.json`, `alexnet_tf_mean_image.npy`).
"""

import dataclasses
import json
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from alexnet_tf import paper, preprocessing
from alexnet_tf import shapes_dataset  # noqa: F401  (registers alexnet_shapes with TFDS)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
BUILT_IN = "alexnet_shapes"
FOLDER_PREFIX = "image_folder:"
IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
MEAN_MODES = ("image", "channel")
# "none": the paper's raw mean-subtracted pixels (0..255 scale); "std": divided by the
# training set's per-channel standard deviation (unit scale, for He/Glorot inits).
INPUT_SCALES = ("none", "std")
STATS_FILE = "alexnet_tf_stats.json"
MEAN_IMAGE_FILE = "alexnet_tf_mean_image.npy"
PIXEL_SCALE = 255.0  # PCA is computed on RGB in [0, 1]; offsets are applied in [0, 255].


def notice(message):
    """A one-time notice for the user (stderr), independent of the logging verbosity."""
    print(message, file=sys.stderr, flush=True)


class DataError(ValueError):
    """A problem with the user's data or dataset choice; its message is one line."""


def atomic_write(path, data):
    """Writes bytes to `path` through a temporary file in the same folder and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# --- Sources -----------------------------------------------------------------


class TfdsSource:
    """A prepared TFDS dataset, read as (encoded image bytes, label)."""

    def __init__(self, name, data_dir):
        self.name = name
        self.data_dir = os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR")
                                           or "~/tensorflow_datasets")
        try:
            self.builder = tfds.builder(name, data_dir=self.data_dir)
        except tfds.core.registered.DatasetNotFoundError:
            raise DataError(f"unknown dataset {name!r}: use {BUILT_IN} (built in), a TFDS name "
                            f"(e.g. imagenet2012) or {FOLDER_PREFIX}ROOT") from None
        self._prepare()
        info = self.builder.info
        self.image_key, self.label_key = info.supervised_keys or ("image", "label")
        label = info.features[self.label_key]
        self.class_names = list(label.names)
        self.stats_dir = str(self.builder.data_dir)

    def _prepare(self):
        builder = self.builder
        if builder.is_prepared():
            return
        base = builder.info.name
        if base == BUILT_IN:
            notice(f"Generating the built-in dataset {base} in {builder.data_dir} (once, ~1 minute).")
            builder.download_and_prepare()
        elif base == "imagenet2012":
            manual = os.path.join(self.data_dir, "downloads", "manual")  # TFDS' default
            missing = [t for t in IMAGENET_TARS if not os.path.exists(os.path.join(manual, t))]
            if missing:
                raise DataError(f"imagenet2012 needs {' and '.join(missing)} in {manual} "
                                "(download them from image-net.org, then run again)")
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=manual))
        else:
            raise DataError(
                f"dataset {self.name!r} is not prepared in {self.data_dir} and alexnet_tf "
                f"never downloads: run `tfds build {self.name} --data_dir=DIR` where there is "
                "network and copy DIR here, or use --dataset=alexnet_shapes")

    def splits(self):
        return list(self.builder.info.splits.keys())

    def num_examples(self, split):
        return self.builder.info.splits[self._check_split(split)].num_examples

    def _check_split(self, split):
        if split not in self.builder.info.splits:
            raise DataError(f"dataset {self.name!r} has no split {split!r}; its splits: "
                            f"{', '.join(self.splits())}")
        return split

    def encoded(self, split, shuffle_files=False, seed=0):
        read_config = tfds.ReadConfig(shuffle_seed=seed, try_autocache=False)
        ds = self.builder.as_dataset(
            split=self._check_split(split), shuffle_files=shuffle_files, read_config=read_config,
            decoders={self.image_key: tfds.decode.SkipDecoding()})
        return ds.map(lambda ex: (ex[self.image_key], ex[self.label_key]),
                      num_parallel_calls=tf.data.AUTOTUNE)


class FolderSource:
    """Images in ROOT/<split>/<class>/<file>, read as (encoded bytes, label).

    Each split is scanned once: files TensorFlow cannot decode are skipped,
    named in a warning and counted (`skipped`); the result is cached in
    ROOT/.alexnet_tf/ and reused while the folder's files stay the same.
    """

    def __init__(self, root):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.name = FOLDER_PREFIX + self.root
        if not os.path.isdir(self.root):
            raise DataError(f"image folder {self.root} does not exist; expected "
                            "ROOT/<split>/<class>/*.jpg")
        self.stats_dir = os.path.join(self.root, ".alexnet_tf")
        train = os.path.join(self.root, "train")
        if not os.path.isdir(train):
            raise DataError(f"image folder {self.root} has no train/ split; expected "
                            "ROOT/train/<class>/*.jpg and ROOT/validation/<class>/*.jpg")
        self.class_names = sorted(d for d in os.listdir(train)
                                  if os.path.isdir(os.path.join(train, d)))
        if not self.class_names:
            raise DataError(f"{train} has no class folders; expected {train}/<class>/*.jpg")
        self.skipped = {}
        self._files = {}

    def splits(self):
        return sorted(d for d in os.listdir(self.root)
                      if os.path.isdir(os.path.join(self.root, d)) and not d.startswith("."))

    def num_examples(self, split):
        return len(self._good_files(split)[0])

    def _list(self, split):
        folder = os.path.join(self.root, split)
        if not os.path.isdir(folder):
            raise DataError(f"image folder {self.root} has no split {split!r}; its splits: "
                            f"{', '.join(self.splits())}")
        paths, labels = [], []
        for class_name in sorted(os.listdir(folder)):
            class_dir = os.path.join(folder, class_name)
            if not os.path.isdir(class_dir):
                continue
            if class_name not in self.class_names:
                raise DataError(f"class folder {class_dir} is not in the train split's classes; "
                                "every split must use the train split's class folders")
            for name in sorted(os.listdir(class_dir)):
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.join(class_dir, name))
                    labels.append(self.class_names.index(class_name))
        if not paths:
            raise DataError(f"{folder} has no images (*.jpg, *.jpeg, *.png, *.gif, *.bmp)")
        return paths, labels

    def _good_files(self, split):
        if split in self._files:
            return self._files[split]
        paths, labels = self._list(split)
        listing = [[os.path.relpath(p, self.root), os.path.getsize(p), os.path.getmtime(p)]
                   for p in paths]
        manifest_path = os.path.join(self.stats_dir, f"manifest-{split}.json")
        manifest = _read_json(manifest_path)
        if manifest and manifest.get("listing") == listing:
            bad = set(manifest["bad"])
        else:
            bad = _undecodable(paths)
            try:
                atomic_write(manifest_path, json.dumps({"listing": listing, "bad": sorted(bad)})
                             .encode())
            except OSError as e:
                logging.warning("Could not cache the scan of %s (%s); it is redone next run.",
                                split, e)
        for i in sorted(bad):
            logging.warning("Skipping %s: not a decodable image.", paths[i])
        self.skipped[split] = len(bad)
        good = [i for i in range(len(paths)) if i not in bad]
        if not good:
            raise DataError(f"no decodable images in {os.path.join(self.root, split)}")
        self._files[split] = ([paths[i] for i in good], [labels[i] for i in good])
        return self._files[split]

    def encoded(self, split, shuffle_files=False, seed=0):
        del shuffle_files, seed  # Files are shuffled with the examples.
        paths, labels = self._good_files(split)
        ds = tf.data.Dataset.from_tensor_slices((paths, tf.constant(labels, tf.int64)))
        return ds.map(lambda p, y: (tf.io.read_file(p), y), num_parallel_calls=tf.data.AUTOTUNE)


def _undecodable(paths):
    """Indices of the files TensorFlow cannot read and decode (a parallel tf.data scan)."""
    def check(index, path):
        image = preprocessing.decode_rgb(tf.io.read_file(path))
        return index, tf.shape(image)[0]

    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), paths))
    ds = ds.map(check, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    good = {int(i) for i, _ in ds.as_numpy_iterator()}
    return set(range(len(paths))) - good


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def open_source(dataset, data_dir=None):
    """The source `dataset` names: a TFDS name or image_folder:ROOT."""
    if dataset.startswith(FOLDER_PREFIX):
        return FolderSource(dataset[len(FOLDER_PREFIX):])
    return TfdsSource(dataset, data_dir)


# --- Statistics ----------------------------------------------------------------


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
    ds = ds.map(lambda x, y: preprocessing.paper_256(x), num_parallel_calls=tf.data.AUTOTUNE)

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
        raise DataError(f"split {split!r} of {source.name} has no images to compute statistics")
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
    with tempfile.TemporaryFile() as buffer:
        np.save(buffer, stats.mean_image)
        buffer.seek(0)
        atomic_write(os.path.join(folder, MEAN_IMAGE_FILE), buffer.read())
    summary = {"mean_channel": stats.mean_channel.tolist(), "eigenvalues": stats.eigenvalues.tolist(),
               "eigenvectors": stats.eigenvectors.tolist(), "num_images": stats.num_images,
               "pixel_scale_of_pca": "RGB in [0, 1]"}
    atomic_write(os.path.join(folder, STATS_FILE), json.dumps(summary, indent=2).encode())


def load_stats(folder):
    """The stats saved in `folder`, or None if there are none."""
    summary = _read_json(os.path.join(folder, STATS_FILE))
    mean_path = os.path.join(folder, MEAN_IMAGE_FILE)
    if summary is None or not os.path.exists(mean_path):
        return None
    return Stats(mean_image=np.load(mean_path),
                 mean_channel=np.asarray(summary["mean_channel"], np.float32),
                 eigenvalues=np.asarray(summary["eigenvalues"], np.float32),
                 eigenvectors=np.asarray(summary["eigenvectors"], np.float32),
                 num_images=int(summary["num_images"]))


def stats_for(source, split="train", max_images=5000):
    """The source's stats: loaded from beside it, or computed once and stored there."""
    stats = load_stats(source.stats_dir)
    if stats is None:
        notice(f"Computing the mean and RGB PCA of {source.name}/{split} (once).")
        stats = compute_stats(source, split, max_images)
        save_stats(stats, source.stats_dir)
    return stats


# --- Pipelines ---------------------------------------------------------------


def _options():
    options = tf.data.Options()
    options.deterministic = True
    # Autotuning off: with it on, deleting an epoch's iterator after ~45 s of training blocked
    # for 30-40 s (in RootDataset::Iterator's destructor, joining a tf.data thread) at 3 of 4
    # epoch ends measured here; off, the pipeline ran as fast (910 vs 850 images/s).
    options.autotune.enabled = False
    return options


def train_dataset(source, stats, batch_size, *, split="train", seed=0, epoch=0, mean_mode="image",
                  input_scale="none", pca=True, shuffle_buffer=10_000, skip_batches=0,
                  num_shards=1, shard_index=0, max_batches=None, image_size=paper.IMAGE_SIZE):
    """One epoch of training batches (float32 [B, S, S, 3], int64 [B]), drop_remainder.

    S is `image_size`: 224 (the paper), or 227 for `build_alexnet(image_size=227)`.

    Reproducible: the order and every crop, flip and PCA draw follow from
    (seed, epoch) alone, whatever the thread scheduling. `skip_batches` drops
    the epoch's first batches before decoding them (a resumed run's rest of an
    epoch is exactly what the uninterrupted run would have seen).

    With `num_shards` > 1 (one shard per worker of a multi-worker job) this
    pipeline keeps every `num_shards`-th image of the epoch's order, from
    `shard_index`: the workers see disjoint images, each augmented exactly as a
    single pipeline would augment it. `max_batches` caps the batches, so that
    every worker runs the same number of steps.
    """
    epoch_seed = seed * 1_000_003 + epoch
    mean, scale = tf.constant(stats.mean(mean_mode)), tf.constant(stats.scale(input_scale))
    eigenvalues, eigenvectors = tf.constant(stats.eigenvalues), tf.constant(stats.eigenvectors)

    def augment(index, example):
        encoded, label = example
        image_seed = tf.stack([tf.cast(epoch_seed, tf.int64), index])
        crop_seed, pca_seed = tf.unstack(tf.random.experimental.stateless_split(image_seed, 2))
        image = preprocessing.paper_256(encoded) - mean
        image = preprocessing.random_crop_and_flip(image, crop_seed, image_size)
        if pca:
            image += PIXEL_SCALE * preprocessing.pca_offset(pca_seed, eigenvalues, eigenvectors)
        return image / scale, label

    ds = source.encoded(split, shuffle_files=True, seed=epoch_seed)
    ds = ds.shuffle(shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False).enumerate()
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)
    ds = ds.skip(skip_batches * batch_size).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    if max_batches is not None:
        ds = ds.take(max_batches)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def eval_dataset(source, stats, batch_size, *, split="validation", mean_mode="image",
                 input_scale="none", ten_crop=False, image_size=paper.IMAGE_SIZE):
    """Evaluation batches: centre crop [B, S, S, 3] or ten crops [B, 10, S, S, 3], S = image_size."""
    mean, scale = tf.constant(stats.mean(mean_mode)), tf.constant(stats.scale(input_scale))
    crop_fn = preprocessing.ten_crops if ten_crop else preprocessing.centre_crop

    def crop(image):
        return crop_fn(image, image_size)

    @tf.autograph.experimental.do_not_convert   # no Python control flow to convert
    def prepare(encoded, label):
        return crop((preprocessing.paper_256(encoded) - mean) / scale), label

    ds = source.encoded(split).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(_options())
