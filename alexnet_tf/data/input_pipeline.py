"""The tf.data pipelines: training batches (section 4.1's augmentation) and evaluation batches.

Both read a source's encoded images (`sources`), apply section 2's
preprocessing (`preprocessing`) and the run's `dataset_stats.Normalization`, and
yield float32 batches the network takes.
"""

import tensorflow as tf

from alexnet_tf import paper
from alexnet_tf.data import preprocessing
from alexnet_tf.data.randaugment import rand_augment


def _options():
    options = tf.data.Options()
    options.deterministic = True
    # Autotuning off: with it on, deleting an epoch's iterator could block for 30-40 s (joining
    # a tf.data thread); off, the pipeline runs as fast.
    options.autotune.enabled = False
    return options


def _beta(seed, alpha):
    """One draw of Beta(alpha, alpha) from a stateless seed."""
    a, b = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    x = tf.random.stateless_gamma([], a, alpha)
    y = tf.random.stateless_gamma([], b, alpha)
    return x / (x + y)


def mix_batch(images, labels, seed, mixup=0.0, cutmix=0.0):
    """MixUp (Zhang et al., 2018) or CutMix (Yun et al., 2019) of a batch with itself reversed.

    With `mixup` alpha > 0, lam ~ Beta(alpha, alpha) and each image becomes lam x itself +
    (1 - lam) x its partner (the image at the mirrored position). With `cutmix` alpha > 0, a box of
    area (1 - lam) at a uniform centre, clipped to the image, is taken from the partner, and lam
    becomes the share of the image left. With both, each batch takes one of the two (even odds).

    Returns:
      (images, labels, partner labels, lam): the loss is lam x the labels' loss + (1 - lam) x the
      partner labels'.
    """
    choose, draw, where = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    partner_images, partner_labels = images[::-1], labels[::-1]

    def mixup_pair():
        lam = _beta(draw, mixup)
        return lam * images + (1.0 - lam) * partner_images, lam

    def cutmix_pair():
        size = tf.shape(images)[1:3]
        height, width = tf.cast(size[0], tf.float32), tf.cast(size[1], tf.float32)
        cut = tf.sqrt(1.0 - _beta(draw, cutmix))                 # the box's side, a fraction
        centre = tf.random.stateless_uniform([2], where) * tf.stack([height, width])
        half = cut * tf.stack([height, width]) / 2.0
        low = tf.cast(tf.clip_by_value(tf.round(centre - half), 0.0, [height, width]), tf.int32)
        high = tf.cast(tf.clip_by_value(tf.round(centre + half), 0.0, [height, width]), tf.int32)
        rows = tf.logical_and(tf.range(size[0]) >= low[0], tf.range(size[0]) < high[0])
        cols = tf.logical_and(tf.range(size[1]) >= low[1], tf.range(size[1]) < high[1])
        box = tf.cast(tf.logical_and(rows[:, None], cols[None, :]), images.dtype)[None, :, :, None]
        lam = 1.0 - tf.reduce_mean(box)
        return images * (1.0 - box) + partner_images * box, tf.cast(lam, images.dtype)

    if cutmix > 0 and mixup > 0:
        mixed, lam = tf.cond(tf.random.stateless_uniform([], choose) < 0.5, cutmix_pair,
                             mixup_pair)
    elif cutmix > 0:
        mixed, lam = cutmix_pair()
    else:
        mixed, lam = mixup_pair()
    return mixed, labels, partner_labels, lam


def train_dataset(source, normalization, batch_size, *, split="train", seed=0, epoch=0, pca=True,
                  image_size=paper.IMAGE_SIZE, skip_batches=0, max_batches=None, shard=(1, 0),
                  shuffle_buffer=10_000, mixup=0.0, cutmix=0.0, randaugment=None):
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
      mixup, cutmix: Alphas of `mix_batch` (0: off); with either, batches are (images, labels,
        partner labels, lam), each batch's draw following from (seed, epoch, its index).
      randaugment: None, or (number of operations, magnitude): `randaugment.rand_augment` of
        each 256x256 image before the mean is subtracted, drawn from the image's seed.
    """
    num_shards, shard_index = shard
    epoch_seed = seed * 1_000_003 + epoch

    def augment(index, example):
        encoded, label = example
        image_seed = tf.stack([tf.cast(epoch_seed, tf.int64), index])
        crop_seed, pca_seed = tf.unstack(tf.random.experimental.stateless_split(image_seed, 2))
        image = normalization.decode_256(encoded)
        if randaugment:               # its own seed: the crops and PCA draws stay as without it
            image = rand_augment(image, tf.random.experimental.stateless_fold_in(image_seed, 1),
                                 *randaugment)
        image = normalization.subtract_mean(image)
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
    if mixup > 0 or cutmix > 0:
        def mix(index, batch):
            batch_seed = tf.stack([tf.cast(epoch_seed, tf.int64) + 7_919,
                                   index + skip_batches])
            return mix_batch(*batch, batch_seed, float(mixup), float(cutmix))
        ds = ds.enumerate().map(mix, num_parallel_calls=tf.data.AUTOTUNE)
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
