"""Where images come from: a prepared TFDS dataset or a folder tree, read as (bytes, label).

Sources, selected by one string (`--dataset`):

* a TFDS dataset name (`alexnet_shapes`, the built-in offline dataset;
  `imagenet2012` from TFDS' manual directory; any prepared supervised image
  dataset). Nothing is ever downloaded: a dataset that is not prepared in
  `data_dir` fails with one line saying how to prepare it.
* `image_folder:ROOT`, a folder tree `ROOT/<split>/<class>/*.jpg|png|...`.

Every source has `name`, `class_names`, `stats_dir` (where its training-set
statistics are kept), `splits()`, `num_examples(split)` and `encoded(split)`.
"""

import contextlib
import io
import os
import sys

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from alexnet_tf import errors, files
from alexnet_tf.config import BUILT_IN
from alexnet_tf.data import preprocessing
from alexnet_tf.data import shapes_dataset  # noqa: F401  (registers alexnet_shapes with TFDS)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
FOLDER_PREFIX = "image_folder:"
IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


def notice(message):
    """A one-time notice for the user (stderr), independent of the logging verbosity."""
    print(message, file=sys.stderr, flush=True)


class DataError(errors.UserError):
    """A problem with the user's data or dataset choice; its message is one line."""


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
            with contextlib.redirect_stdout(io.StringIO()):   # TFDS' "Downloading and preparing"
                builder.download_and_prepare()
        elif base == "imagenet2012":
            manual = os.path.join(self.data_dir, "downloads", "manual")  # TFDS' default
            missing = [t for t in IMAGENET_TARS if not os.path.exists(os.path.join(manual, t))]
            if missing:
                raise DataError(f"imagenet2012 needs {' and '.join(missing)} in {manual} "
                                "(download them from image-net.org, then run again)")
            notice(f"Preparing imagenet2012 from {manual} in {self.data_dir} (once, hours).")
            with contextlib.redirect_stdout(io.StringIO()):
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

    def __init__(self, root, max_megapixels=preprocessing.MAX_MEGAPIXELS):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.max_megapixels = max_megapixels
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
        bad = _cached_scan(files.read_json(manifest_path), listing, self.max_megapixels)
        if bad is None:
            bad = _unusable(paths, self.max_megapixels)
            try:
                files.atomic_write_json(manifest_path, {
                    "listing": listing, "max_megapixels": self.max_megapixels,
                    "bad": sorted(bad), "reasons": {str(i): r for i, r in bad.items()}})
            except OSError as e:
                logging.warning("Could not cache the scan of %s (%s); it is redone next run.",
                                split, e)
        for i in sorted(bad):
            logging.warning("Skipping %s: %s.", paths[i], bad[i])
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


def _cached_scan(manifest, listing, max_megapixels):
    """{index: why} from a scan cache that matches the folder's files, else None (scan again)."""
    if not (isinstance(manifest, dict) and manifest.get("listing") == listing
            and manifest.get("max_megapixels") == max_megapixels
            and isinstance(manifest.get("reasons"), dict)):
        return None
    bad = {}
    for index, reason in manifest["reasons"].items():
        if not (isinstance(index, str) and index.isdigit() and int(index) < len(listing)
                and isinstance(reason, str)):
            return None
        bad[int(index)] = reason
    return bad


def _unusable(paths, max_megapixels):
    """{index: why} of the files that are too large or that TensorFlow cannot read and decode.

    One parallel tf.data pass reads each file once: its size from the header, and
    a decode only when that size is within the limit (nothing large is decoded).
    """
    def scan(index, path):
        encoded = tf.io.read_file(path)
        size = preprocessing.encoded_size(encoded)
        decoded = tf.cond(preprocessing.within_limit(size, max_megapixels),
                          lambda: tf.shape(preprocessing.decode_rgb(encoded))[0] > 0,
                          lambda: tf.constant(True))
        return index, size, decoded

    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), paths))
    ds = ds.map(scan, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()   # undecodable: gone
    sizes = {int(i): (int(height), int(width)) for i, (height, width), _ in ds.as_numpy_iterator()}
    bad = {i: "not a decodable image" for i in range(len(paths)) if i not in sizes}
    for i, (height, width) in sizes.items():
        reason = preprocessing.too_large(height, width, max_megapixels)
        if reason:
            bad[i] = reason
    return bad


def open_source(dataset, data_dir=None, max_megapixels=preprocessing.MAX_MEGAPIXELS):
    """The source `dataset` names: a TFDS name or image_folder:ROOT (whose scan skips images
    above `max_megapixels`)."""
    if dataset.startswith(FOLDER_PREFIX):
        return FolderSource(dataset[len(FOLDER_PREFIX):], max_megapixels)
    return TfdsSource(dataset, data_dir)


def class_counts(source, split):
    """The number of images of each class in `split` (one pass over its records, not decoded)."""
    counts = np.zeros(len(source.class_names), np.int64)
    for _, label in source.encoded(split).as_numpy_iterator():
        counts[int(label)] += 1
    return counts
