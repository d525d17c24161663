"""The tf.data pipelines: training batches (section 4.1's augmentation) and evaluation batches.

Both read a source's encoded images (`sources`), apply section 2's
preprocessing (`preprocessing`) and the run's `dataset_stats.Normalization`, and
yield float32 batches the network takes.
"""

import tensorflow as tf

from alexnet_tf import paper
from alexnet_tf.data import preprocessing


def _options():
    options = tf.data.Options()
    options.deterministic = True
    # Autotuning off: with it on, deleting an epoch's iterator could block for 30-40 s (joining
    # a tf.data thread); off, the pipeline runs as fast.
    options.autotune.enabled = False
    return options


def train_dataset(source, normalization, batch_size, *, split="train", seed=0, epoch=0, pca=True,
                  image_size=paper.IMAGE_SIZE, skip_batches=0, max_batches=None, shard=(1, 0),
                  shuffle_buffer=10_000):
    """One epoch of training batches (float32 [B, S, S, 3], int64 [B]), drop_remainder.

    Args:
      source: A `sources` source.
      normalization: The run's `dataset_stats.Normalization`.
      batch_size: Images a batch.
      split, seed, epoch: What to read; the order and every crop, flip and PCA
        draw follow from (seed, epoch) alone, whatever the thread scheduling.
      pca: Add section 4.1's PCA colour offset.
      image_size: S, the crop side: 224 (the paper), or 227 for
        `build_alexnet(image_size=227)`.
      skip_batches: Drop the epoch's first batches before decoding them (a
        resumed run's rest of an epoch is exactly what the uninterrupted run
        would have seen).
      max_batches: At most this many batches (every worker of a multi-worker
        job runs the same number of steps).
      shard: (number of shards, this shard): with more than one shard (one per
        worker) this pipeline keeps every n-th image of the epoch's order: the
        workers see disjoint images, each augmented exactly as a single
        pipeline would augment it.
      shuffle_buffer: Images in the shuffle buffer.
    """
    num_shards, shard_index = shard
    epoch_seed = seed * 1_000_003 + epoch

    def augment(index, example):
        encoded, label = example
        image_seed = tf.stack([tf.cast(epoch_seed, tf.int64), index])
        crop_seed, pca_seed = tf.unstack(tf.random.experimental.stateless_split(image_seed, 2))
        image = normalization.subtract_mean(normalization.decode_256(encoded))
        image = preprocessing.random_crop_and_flip(image, crop_seed, image_size)
        if pca:
            image += normalization.pca_offset(pca_seed)
        return normalization.divide(image), label

    ds = source.encoded(split, shuffle_files=True, seed=epoch_seed)
    ds = ds.shuffle(shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False).enumerate()
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)
    ds = ds.skip(skip_batches * batch_size).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    if max_batches is not None:
        ds = ds.take(max_batches)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def eval_dataset(source, normalization, batch_size, *, split="validation", ten_crop=False,
                 image_size=paper.IMAGE_SIZE, max_images=None):
    """Evaluation batches: centre crop [B, S, S, 3] or ten crops [B, 10, S, S, 3], S = image_size.

    `max_images`: only the split's first this many images (in its stored order).
    """
    crop_fn = preprocessing.ten_crops if ten_crop else preprocessing.centre_crop

    @tf.autograph.experimental.do_not_convert   # no Python control flow to convert
    def prepare(encoded, label):
        return crop_fn(normalization(normalization.decode_256(encoded)), image_size), label

    ds = source.encoded(split)
    if max_images is not None:
        ds = ds.take(max_images)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(_options())


def client_dataset(source, resize, batch_size, *, split="validation", max_images=None):
    """Batches as a deployment file's client sends them: uint8 [B, 256, 256, 3] after the run's
    resize (the mean, crop and scale are the file's own), and int64 labels [B].

    `resize`: the run's (one of `preprocessing.RESIZES`); `max_images`: only the split's first
    this many images (in its stored order).
    """
    @tf.autograph.experimental.do_not_convert
    def prepare(encoded, label):
        return preprocessing.to_uint8(preprocessing.decode_256(encoded, resize)), label

    ds = source.encoded(split)
    if max_images is not None:
        ds = ds.take(max_images)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(_options())
