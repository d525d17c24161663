"""The tf.data pipelines: reproducible training batches, centre and ten crops, 227 crops."""

import sys

import numpy as np
import pytest

from alexnet_tf import dataset_stats, input_pipeline, sources


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
    # Mean subtracted: the batch is centred near zero (pixel values are 0..255).
    assert abs(images.mean()) < 20


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
    from alexnet_tf import preprocessing
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
