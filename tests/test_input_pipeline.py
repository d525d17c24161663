"""Sources, statistics and tf.data pipelines, against numpy references and hand counts."""

import io
import logging
import os
import sys

import numpy as np
import pytest
from PIL import Image

from alexnet_tf import input_pipeline, preprocessing


@pytest.fixture(scope="module")
def tiny(tiny_data_dir):
    return input_pipeline.open_source("alexnet_shapes/tiny", tiny_data_dir)


def test_built_in_source(tiny):
    assert tiny.class_names[:3] == ["circle", "ring", "square"] and len(tiny.class_names) == 10
    assert (tiny.num_examples("train"), tiny.num_examples("validation")) == (80, 40)


def test_stats_match_numpy_and_are_stored_beside_the_data(tiny):
    stats = input_pipeline.stats_for(tiny)
    images = np.stack([preprocessing.paper_256(x).numpy()
                       for x, _ in tiny.encoded("train").as_numpy_iterator()]).astype(np.float64)
    assert stats.num_images == 80
    np.testing.assert_allclose(stats.mean_image, images.mean(0), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(stats.mean_channel, images.mean((0, 1, 2)), rtol=1e-5)
    covariance = np.cov((images / 255.0).reshape(-1, 3).T, bias=True)
    np.testing.assert_allclose(stats.eigenvectors @ np.diag(stats.eigenvalues) @ stats.eigenvectors.T,
                               covariance, rtol=1e-4, atol=1e-7)
    assert list(stats.eigenvalues) == sorted(stats.eigenvalues, reverse=True)
    # Stored beside the dataset, no temporary files left, and loaded back identical.
    files = set(os.listdir(tiny.stats_dir))
    assert {"alexnet_tf_stats.json", "alexnet_tf_mean_image.npy"} <= files
    assert not [f for f in files if f.startswith(".tmp-")]
    loaded = input_pipeline.load_stats(tiny.stats_dir)
    np.testing.assert_array_equal(loaded.mean_image, stats.mean_image)
    np.testing.assert_array_equal(loaded.eigenvectors, stats.eigenvectors)


def _first_batch(ds):
    images, labels = next(iter(ds))
    return images.numpy(), labels.numpy()


def test_train_batches_are_reproducible_from_seed_and_epoch(tiny):
    stats = input_pipeline.stats_for(tiny)
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
    stats = input_pipeline.stats_for(tiny)
    centre, labels = _first_batch(input_pipeline.eval_dataset(tiny, stats, 8, mean_mode="channel"))
    ten, _ = _first_batch(input_pipeline.eval_dataset(tiny, stats, 8, mean_mode="channel",
                                                      ten_crop=True))
    assert centre.shape == (8, 224, 224, 3) and ten.shape == (8, 10, 224, 224, 3)
    np.testing.assert_allclose(ten[:, 4], centre, atol=1e-4)    # crop 4 is the centre
    np.testing.assert_allclose(ten[:, 9], centre[:, :, ::-1], atol=1e-4)
    batches = list(input_pipeline.eval_dataset(tiny, stats, 16))
    assert sum(len(b[1]) for b in batches) == 40               # evaluation keeps every image


def test_227_pixel_models_get_227_pixel_crops(tiny):
    """build_alexnet(image_size=227) (Caffe's input size) is fed 227 crops, train and eval."""
    stats = input_pipeline.stats_for(tiny)
    train_images, _ = _first_batch(input_pipeline.train_dataset(tiny, stats, 4, image_size=227))
    assert train_images.shape == (4, 227, 227, 3)
    c227, _ = _first_batch(input_pipeline.eval_dataset(tiny, stats, 4, image_size=227))
    c224, _ = _first_batch(input_pipeline.eval_dataset(tiny, stats, 4))
    ten, _ = _first_batch(input_pipeline.eval_dataset(tiny, stats, 4, image_size=227,
                                                      ten_crop=True))
    assert c227.shape == (4, 227, 227, 3) and ten.shape == (4, 10, 227, 227, 3)
    # Centre crops of the same 256x256 image: 227 starts at (256-227)//2 = 14, 224 at 16.
    np.testing.assert_allclose(c227[:, 2:226, 2:226], c224, atol=1e-4)


def _save(path, image, fmt, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, fmt, **kwargs)


def _make_folder(root):
    rng = np.random.default_rng(0)
    rgb = lambda h, w: Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))  # noqa
    for split, per_class in (("train", 3), ("validation", 1)):
        for cls in ("cat", "dog"):
            for i in range(per_class):
                _save(f"{root}/{split}/{cls}/ok{i}.jpg", rgb(260, 300), "JPEG")
    odd = f"{root}/train/cat"
    _save(f"{odd}/gray.jpg", rgb(280, 280).convert("L"), "JPEG")
    _save(f"{odd}/cmyk.jpg", rgb(280, 270).convert("CMYK"), "JPEG")
    _save(f"{odd}/alpha.png", rgb(256, 300).convert("RGBA"), "PNG")
    _save(f"{odd}/small.png", rgb(40, 90), "PNG")
    buffer = io.BytesIO()
    rgb(300, 300).save(buffer, "JPEG")
    with open(f"{root}/train/dog/truncated.jpg", "wb") as f:
        f.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    with open(f"{root}/train/dog/corrupt.jpg", "wb") as f:
        f.write(b"this is not a jpeg")
    with open(f"{root}/train/dog/notes.txt", "w") as f:
        f.write("not an image, and not named like one: ignored")


def test_image_folder_uses_odd_images_and_counts_bad_ones(tmp_path, caplog):
    root = str(tmp_path / "folder")
    _make_folder(root)
    with caplog.at_level(logging.WARNING):
        source = input_pipeline.open_source(f"image_folder:{root}")
        assert source.class_names == ["cat", "dog"]
        assert source.num_examples("train") == 6 + 4   # 3+3 plain + gray, cmyk, alpha, small
    assert source.skipped["train"] == 2
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "truncated.jpg" in warned and "corrupt.jpg" in warned
    stats = input_pipeline.stats_for(source)
    epoch = list(input_pipeline.train_dataset(source, stats, 5, seed=0))
    assert len(epoch) == 2 and all(b[0].shape == (5, 224, 224, 3) for b in epoch)
    labels = np.concatenate([b[1].numpy() for b in epoch])
    assert sorted(labels) == [0] * 7 + [1] * 3
    assert source.num_examples("validation") == 2
    # The scan is cached and reused; a changed folder is scanned again.
    assert os.path.exists(os.path.join(root, ".alexnet_tf", "manifest-train.json"))
    os.remove(f"{root}/train/dog/corrupt.jpg")
    again = input_pipeline.open_source(f"image_folder:{root}")
    assert again.num_examples("train") == 10 and again.skipped["train"] == 1


@pytest.mark.parametrize("dataset,message", [
    ("no_such_dataset_xyz", "unknown dataset 'no_such_dataset_xyz'"),
    ("mnist", "is not prepared in .* alexnet_tf never downloads: run `tfds build mnist"),
    ("imagenet2012", "imagenet2012 needs ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
                     ".*downloads/manual"),
    ("image_folder:/no/such/folder", "image folder /no/such/folder does not exist"),
])
def test_offline_and_bad_sources_fail_with_one_line(dataset, message, tmp_path):
    with pytest.raises(input_pipeline.DataError, match=message) as error:
        input_pipeline.open_source(dataset, str(tmp_path))
    assert "\n" not in str(error.value)


def test_unknown_split_names_the_splits(tiny):
    with pytest.raises(input_pipeline.DataError, match="has no split 'test'; its splits: "):
        tiny.num_examples("test")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
