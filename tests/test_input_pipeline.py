"""The tf.data pipelines: reproducible training batches, centre and ten crops, 227 crops."""

import sys

import numpy as np
import pytest

from alexnet_tf.data import dataset_stats, input_pipeline, sources


@pytest.fixture(scope="module")
def tiny(tiny_data_dir):
    return sources.open_source("alexnet_shapes/tiny", tiny_data_dir)


def _first_batch(ds):
    images, labels = next(iter(ds))
    return images.numpy(), labels.numpy()


def test_train_batches_are_reproducible_from_seed_and_epoch(tiny):
    stats = dataset_stats.Normalization(dataset_stats.stats_for(tiny))
    make = lambda **kw: input_pipeline.train_dataset(tiny, stats, 16, **kw)  # noqa: E731
    images, labels = _first_batch(make(seed=3, epoch=0))
    assert images.shape == (16, 224, 224, 3) and images.dtype == np.float32
    assert labels.dtype == np.int64 and set(labels) <= set(range(10))
    again_images, again_labels = _first_batch(make(seed=3, epoch=0))
    np.testing.assert_array_equal(images, again_images)
    np.testing.assert_array_equal(labels, again_labels)
    other_images, _ = _first_batch(make(seed=3, epoch=1))
    assert not np.array_equal(images, other_images)
    assert sum(1 for _ in make(seed=3, epoch=0)) == 80 // 16       # drop_remainder: full batches


def test_train_images_are_a_training_image_minus_the_mean_flipped_or_not_plus_one_colour(tiny):
    """Section 4.1 by hand, at crop size 256 (the crop is the whole image): each training input
    is a decoded training image minus the mean image, maybe reflected, plus one RGB offset
    for the whole image (the PCA colour), which is zero with pca=False."""
    from alexnet_tf.data import preprocessing
    stats = dataset_stats.stats_for(tiny)
    normalization = dataset_stats.Normalization(stats)
    originals = np.stack([preprocessing.decode_256(x).numpy() - stats.mean_image
                          for x, _ in tiny.encoded("train").as_numpy_iterator()])
    candidates = np.concatenate([originals, originals[:, :, ::-1]])

    def closest(image):
        offsets = (image - candidates).mean(axis=(1, 2))               # [n, 3]: a colour each
        residual = np.abs(image - candidates - offsets[:, None, None]).max(axis=(1, 2, 3))
        best = int(residual.argmin())
        return residual[best], offsets[best]

    for pca in (False, True):
        images, _ = _first_batch(input_pipeline.train_dataset(tiny, normalization, 8, seed=5,
                                                              pca=pca, image_size=256))
        for image in images:
            residual, offset = closest(image)
            assert residual < 0.01                                # pixel units, 0..255
            if pca:
                assert 0 < np.abs(offset).max() < 0.1 * 3 * 255   # a draw of N(0, 0.1) per axis
            else:
                np.testing.assert_allclose(offset, 0, atol=0.01)


def test_mixup_batches_are_the_stated_mixture_with_the_reversed_batch(tiny):
    """--mixup: each image is lam x itself + (1 - lam) x the image at the mirrored position, whose
    label is the partner label; the two weights sum to 1; a resumed epoch mixes alike."""
    import tensorflow as tf
    stats = dataset_stats.Normalization(dataset_stats.stats_for(tiny))
    plain = list(input_pipeline.train_dataset(tiny, stats, 8, seed=2).take(2))
    mixed = list(input_pipeline.train_dataset(tiny, stats, 8, seed=2, mixup=0.4).take(2))
    lams = []
    for (images, labels), (out, same_labels, partner, lam) in zip(plain, mixed):
        images, lam = images.numpy(), float(lam)
        assert 0.0 < lam < 1.0 and lam + (1.0 - lam) == 1.0
        np.testing.assert_allclose(out.numpy(), lam * images + (1 - lam) * images[::-1],
                                   rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(same_labels.numpy(), labels.numpy())
        np.testing.assert_array_equal(partner.numpy(), labels.numpy()[::-1])
        lams.append(lam)
    assert lams[0] != lams[1]                                 # a draw per batch
    resumed = next(iter(input_pipeline.train_dataset(tiny, stats, 8, seed=2, mixup=0.4,
                                                     skip_batches=1)))
    assert float(resumed[3]) == lams[1]
    np.testing.assert_array_equal(resumed[0].numpy(), mixed[1][0].numpy())
    # The train step's loss on a mixed batch: the cross-entropy against the mixed one-hot target.
    import keras
    from alexnet_tf.training import train
    from alexnet_tf.training.optimizer import PaperSGD
    model = keras.Sequential([keras.Input((224, 224, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(10)])
    step = train.make_train_step(model, PaperSGD(learning_rate=1e-12), 8,
                                 tf.distribute.get_strategy())
    logits = model(mixed[0][0]).numpy().astype(np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    target = lams[0] * np.eye(10)[mixed[0][1].numpy()] + \
        (1 - lams[0]) * np.eye(10)[mixed[0][2].numpy()]
    assert np.allclose(target.sum(1), 1.0)
    loss = float(step(tuple(mixed[0]))[0])
    assert loss == pytest.approx(-(target * log_softmax).sum() / 8, rel=1e-5)


def test_cutmix_takes_a_box_from_the_partner_and_weighs_by_its_area(tiny):
    import tensorflow as tf
    rng = np.random.default_rng(0)
    images = rng.normal(size=(6, 40, 32, 3)).astype(np.float32)
    labels = np.arange(6, dtype=np.int64)
    for seed in range(5):
        out, _, partner, lam = (t.numpy() for t in input_pipeline.mix_batch(
            tf.constant(images), tf.constant(labels), tf.constant([seed, 1], tf.int64),
            cutmix=1.0))
        taken = np.all(out == images[::-1], axis=-1)[0]        # [40, 32]: the partner's pixels
        kept = np.all(out == images, axis=-1)[0]
        assert np.all(taken | kept) and (1.0 - taken.mean()) == pytest.approx(float(lam))
        rows, cols = np.where(taken)
        if rows.size:                                          # one rectangle
            assert taken[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        assert all(np.array_equal(np.all(out == images[::-1], axis=-1)[i], taken)
                   for i in range(6))                          # the same box in every image
        np.testing.assert_array_equal(partner, labels[::-1])


def test_eval_batches_centre_and_ten_crops(tiny):
    channel = dataset_stats.Normalization(dataset_stats.stats_for(tiny), mean_mode="channel")
    centre, labels = _first_batch(input_pipeline.eval_dataset(tiny, channel, 8))
    ten, _ = _first_batch(input_pipeline.eval_dataset(tiny, channel, 8, ten_crop=True))
    assert centre.shape == (8, 224, 224, 3) and ten.shape == (8, 10, 224, 224, 3)
    np.testing.assert_allclose(ten[:, 4], centre, atol=1e-4)    # crop 4 is the centre
    np.testing.assert_allclose(ten[:, 9], centre[:, :, ::-1], atol=1e-4)
    batches = list(input_pipeline.eval_dataset(tiny, channel, 16))
    assert sum(len(b[1]) for b in batches) == 40               # evaluation keeps every image


def test_eval_images_are_the_centre_crop_minus_the_mean_over_the_scale(tiny):
    """Section 2 by hand: the decoded 256x256 image, minus the mean image, divided by the
    per-channel std, then the centre 224 (starting at 16)."""
    from alexnet_tf.data import preprocessing
    stats = dataset_stats.stats_for(tiny)
    normalization = dataset_stats.Normalization(stats, "image", "std")
    centre, _ = _first_batch(input_pipeline.eval_dataset(tiny, normalization, 2))
    encoded = [x for x, _ in tiny.encoded("validation").take(2).as_numpy_iterator()]
    scale = np.sqrt(np.diag(stats.eigenvectors @ np.diag(stats.eigenvalues)
                            @ stats.eigenvectors.T)) * 255.0
    for index, data in enumerate(encoded):
        image = preprocessing.decode_256(data).numpy()
        expected = ((image - stats.mean_image) / scale)[16:240, 16:240]
        np.testing.assert_allclose(centre[index], expected, rtol=1e-4, atol=1e-4)


def test_227_pixel_models_get_227_pixel_crops(tiny):
    """build_alexnet(image_size=227) (Caffe's input size) is fed 227 crops, train and eval."""
    stats = dataset_stats.Normalization(dataset_stats.stats_for(tiny))
    train_images, _ = _first_batch(input_pipeline.train_dataset(tiny, stats, 4, image_size=227))
    assert train_images.shape == (4, 227, 227, 3)
    c227, _ = _first_batch(input_pipeline.eval_dataset(tiny, stats, 4, image_size=227))
    c224, _ = _first_batch(input_pipeline.eval_dataset(tiny, stats, 4))
    ten, _ = _first_batch(input_pipeline.eval_dataset(tiny, stats, 4, image_size=227,
                                                      ten_crop=True))
    assert c227.shape == (4, 227, 227, 3) and ten.shape == (4, 10, 227, 227, 3)
    # Centre crops of the same 256x256 image: 227 starts at (256-227)//2 = 14, 224 at 16.
    np.testing.assert_allclose(c227[:, 2:226, 2:226], c224, atol=1e-4)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
