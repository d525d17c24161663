"""`alexnet_shapes`: the built-in, offline dataset, registered with TFDS.

Ten classes of shapes, drawn from a seed with numpy on first use (no network):
the class is the shape's structure, while its colour, the background's colour
and texture, which of the two is the darker, position, scale, rotation and the
image size all vary at random and independently of the class (rotation within
+-30 degrees, so that asymmetric shapes keep their orientation), and the shape's
area is drawn independently of the class too, so no per-image colour or
brightness statistic tells the classes apart (tests/test_shapes_dataset.py shows it). RGB JPEGs of
256-320 pixels a side; 300 training and 60 validation images a class (config
`standard`, the default), or 8 and 4 (config `tiny`, `alexnet_shapes/tiny`, for
tests and demos; its images are the first of `standard`'s).

    import tensorflow_datasets as tfds
    import alexnet_tf.data.shapes_dataset  # registers the builder
    ds = tfds.load("alexnet_shapes", split="train", data_dir="~/tensorflow_datasets")
"""

import collections
import concurrent.futures
import dataclasses
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

CLASS_NAMES = ("circle", "ring", "square", "triangle", "star", "cross", "crescent", "heart",
               "arrow", "hexagon")
SPLIT_SEEDS = {"train": 1, "validation": 2}
SEED = 2012
MIN_SIDE, MAX_SIDE = 256, 320
MAX_ROTATION = 30  # degrees either way: the arrow points right-ish, the heart stands upright


def _regular_polygon(vertices, radius_outer, radius_inner=None):
    """Vertices of a regular polygon (or a star, with an inner radius), unit scale."""
    if radius_inner is None:
        angles = np.arange(vertices) * 2 * np.pi / vertices - np.pi / 2
        return np.stack([np.cos(angles), np.sin(angles)], -1) * radius_outer
    angles = np.arange(2 * vertices) * np.pi / vertices - np.pi / 2
    radii = np.where(np.arange(2 * vertices) % 2 == 0, radius_outer, radius_inner)
    return np.stack([np.cos(angles) * radii, np.sin(angles) * radii], -1)


_POLYGONS = {
    "square": np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]),
    "triangle": _regular_polygon(3, 1.0),
    "star": _regular_polygon(5, 1.0, 0.4),
    "hexagon": _regular_polygon(6, 0.95),
    "arrow": np.array([[-0.9, -0.25], [0.2, -0.25], [0.2, -0.6], [0.95, 0.0], [0.2, 0.6],
                       [0.2, 0.25], [-0.9, 0.25]]),
}


def _inside_polygon(x, y, polygon):
    """Even-odd rule on a grid: True where (x, y) lies inside `polygon`."""
    inside = np.zeros(x.shape, bool)
    for (x0, y0), (x1, y1) in zip(polygon, np.roll(polygon, -1, axis=0)):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < x_cross)
    return inside


def shape_mask(name, x, y):
    """Boolean mask of shape `name` on unit coordinates x, y (the shape spans about [-1, 1])."""
    r = np.hypot(x, y)
    if name == "circle":
        return r < 0.9
    if name == "ring":
        return (r < 0.95) & (r > 0.6)
    if name == "cross":
        return ((np.abs(x) < 0.3) & (np.abs(y) < 0.95)) | ((np.abs(y) < 0.3) & (np.abs(x) < 0.95))
    if name == "crescent":
        return (r < 0.95) & (np.hypot(x - 0.45, y) > 0.75)
    if name == "heart":
        u, v = x * 1.15, -y * 1.15 + 0.15
        return (u * u + v * v - 1) ** 3 - u * u * v ** 3 < 0
    return _inside_polygon(x, y, _POLYGONS[name])


def _upsample(grid, height, width):
    """A coarse grid upsampled bilinearly to height x width (a smooth texture in [0, 1])."""
    cells = grid.shape[0] - 1
    ys, xs = np.linspace(0, cells, height), np.linspace(0, cells, width)
    y0, x0 = np.minimum(ys.astype(int), cells - 1), np.minimum(xs.astype(int), cells - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def unit_area(name, resolution=400):
    """Area of shape `name` at scale 1 (in unit coordinates), measured on a grid."""
    y, x = np.mgrid[-1.2:1.2:resolution * 1j, -1.2:1.2:resolution * 1j]
    return shape_mask(name, x, y).mean() * 2.4 ** 2


_UNIT_AREAS = {}


def draw(name, rng):
    """Every random choice of one image of shape `name`, drawn from `rng` in a fixed order.

    One of shape and background is dark (each channel in [0, 0.4]) and the other
    light ([0.6, 1]), which one at random; hues are random. The shape's area, a
    random 6-20% of the shorter side squared, does not depend on the class.
    Returns a dict for `paint`.
    """
    if name not in _UNIT_AREAS:
        _UNIT_AREAS[name] = unit_area(name)
    height, width = (int(side) for side in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))
    dark, light = rng.random(3) * 0.4, 0.6 + rng.random(3) * 0.4
    shape_colour, background = (dark, light) if rng.random() < 0.5 else (light, dark)
    texture_cells = int(rng.integers(2, 6))
    texture_grid = rng.random((texture_cells + 1, texture_cells + 1))
    texture_tint = rng.uniform(-1, 1, 3)
    side = min(height, width)
    scale = np.sqrt(rng.uniform(0.06, 0.20) * side ** 2 / _UNIT_AREAS[name])
    cx = rng.uniform(scale, width - scale)
    cy = rng.uniform(scale, height - scale)
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    shade_grid = rng.random((4, 4))
    grain = rng.normal(0.0, 0.03, (height, width, 3))
    return dict(name=name, height=height, width=width, shape_colour=shape_colour,
                background=background, texture_grid=texture_grid, texture_tint=texture_tint,
                scale=scale, cx=cx, cy=cy, angle=angle, shade_grid=shade_grid, grain=grain)


def paint(d):
    """The RGB uint8 image that `draw`'s choices `d` describe (no randomness left)."""
    height, width = d["height"], d["width"]
    # Background: its colour shaded by a smooth random texture (+-0.1), plus grain below.
    texture = _upsample(d["texture_grid"], height, width)[..., None]
    image = d["background"] + 0.2 * (texture - 0.5) * d["texture_tint"]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = (xx - d["cx"]) / d["scale"], (yy - d["cy"]) / d["scale"]
    cos, sin = np.cos(d["angle"]), np.sin(d["angle"])
    mask = shape_mask(d["name"], cos * u + sin * v, -sin * u + cos * v)
    shade = 0.9 + 0.1 * _upsample(d["shade_grid"], height, width)[..., None]
    image = np.where(mask[..., None], d["shape_colour"] * shade, image)
    image = image + d["grain"]
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def render(name, rng):
    """One RGB uint8 image of shape `name`, every nuisance drawn from `rng` (see `draw`)."""
    return paint(draw(name, rng))


def generate(split, per_class, seed=SEED, threads=None):
    """Yields (key, image uint8 HxWx3, class index) for a split, deterministically.

    The random choices are drawn in order from one generator (they fix the
    images); the painting, pure numpy, runs on `threads` threads (all cores).
    """
    rng = np.random.default_rng([seed, SPLIT_SEEDS[split]])
    threads = threads or os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        pending = collections.deque()
        for i in range(per_class * len(CLASS_NAMES)):
            label = i % len(CLASS_NAMES)
            pending.append((i, pool.submit(paint, draw(CLASS_NAMES[label], rng)), label))
            if len(pending) > 2 * threads:
                key, image, label = pending.popleft()
                yield key, image.result(), label
        while pending:
            key, image, label = pending.popleft()
            yield key, image.result(), label


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
    """How many images of each class a split has."""
    train_per_class: int = 300
    validation_per_class: int = 60


class AlexnetShapes(tfds.core.GeneratorBasedBuilder):
    """alexnet_tf's built-in dataset: ten shape classes, generated offline from a seed."""

    VERSION = tfds.core.Version("3.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Ten shape classes, 300 train / 60 validation images each.",
        "2.0.0": "Dark/light contrast, class-independent shape area.",
        "3.0.0": "Rotation within +-30 degrees: learnable on a CPU in minutes.",
    }
    BUILDER_CONFIGS = [
        ShapesConfig(name="standard", description="300 train / 60 validation images a class."),
        ShapesConfig(name="tiny", description="8 train / 4 validation images a class.",
                     train_per_class=8, validation_per_class=4),
    ]

    def _info(self):
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            }),
            supervised_keys=("image", "label"),
            homepage="https://github.com/alexnet-tf/alexnet_tf",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {split: self._generate_examples(split) for split in SPLIT_SEEDS}

    def _generate_examples(self, split):
        per_class = getattr(self.builder_config, f"{split}_per_class")
        for key, image, label in generate(split, per_class):
            jpeg = tf.io.encode_jpeg(image, quality=92).numpy()
            yield key, {"image": jpeg, "label": label}  # TFDS stores encoded bytes as they are
