"""Sources: the built-in dataset, image folders (odd and bad files), offline refusals."""

import io
import logging
import os
import sys

import numpy as np
import pytest
from PIL import Image

from alexnet_tf.data import dataset_stats, input_pipeline, sources


@pytest.fixture(scope="module")
def tiny(tiny_data_dir):
    return sources.open_source("alexnet_shapes/tiny", tiny_data_dir)


def test_built_in_source(tiny):
    assert tiny.class_names[:3] == ["circle", "ring", "square"] and len(tiny.class_names) == 10
    assert (tiny.num_examples("train"), tiny.num_examples("validation")) == (80, 40)


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
        source = sources.open_source(f"image_folder:{root}")
        assert source.class_names == ["cat", "dog"]
        assert source.num_examples("train") == 6 + 4   # 3+3 plain + gray, cmyk, alpha, small
    assert source.skipped["train"] == 2
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "truncated.jpg" in warned and "corrupt.jpg" in warned
    stats = dataset_stats.Normalization(dataset_stats.stats_for(source))
    epoch = list(input_pipeline.train_dataset(source, stats, 5, seed=0))
    assert len(epoch) == 2 and all(b[0].shape == (5, 224, 224, 3) for b in epoch)
    labels = np.concatenate([b[1].numpy() for b in epoch])
    assert sorted(labels) == [0] * 7 + [1] * 3
    assert source.num_examples("validation") == 2
    # The scan is cached and reused; a changed folder is scanned again.
    assert os.path.exists(os.path.join(root, ".alexnet_tf", "manifest-train.json"))
    os.remove(f"{root}/train/dog/corrupt.jpg")
    again = sources.open_source(f"image_folder:{root}")
    assert again.num_examples("train") == 10 and again.skipped["train"] == 1


@pytest.mark.parametrize("dataset,message", [
    ("no_such_dataset_xyz", "unknown dataset 'no_such_dataset_xyz'"),
    ("mnist", "is not prepared in .* alexnet_tf never downloads: run `tfds build mnist"),
    ("imagenet2012", "imagenet2012 needs ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
                     ".*downloads/manual"),
    ("image_folder:/no/such/folder", "image folder /no/such/folder does not exist"),
])
def test_offline_and_bad_sources_fail_with_one_line(dataset, message, tmp_path):
    with pytest.raises(sources.DataError, match=message) as error:
        sources.open_source(dataset, str(tmp_path))
    assert "\n" not in str(error.value)


def test_unknown_split_names_the_splits(tiny):
    with pytest.raises(sources.DataError, match="has no split 'test'; its splits: "):
        tiny.num_examples("test")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_the_built_in_datasets_first_preparation_is_one_line_of_ours(tmp_path, capfd):
    """TFDS printed "Downloading and preparing dataset Unknown size ..." on stdout, although
    nothing is downloaded; the first preparation now says one line of its own, on stderr."""
    source = sources.open_source("alexnet_shapes/tiny", str(tmp_path))
    assert source.num_examples("train") == 80
    out, err = capfd.readouterr()
    assert out == ""
    assert err.splitlines()[0] == (f"Generating the built-in dataset alexnet_shapes in "
                                   f"{tmp_path}/alexnet_shapes/tiny/3.0.0 (once, ~1 minute).")
    assert "Downloading and preparing" not in out + err
