"""Grad-CAM against numpy, where it looks, and on the real two-tower AlexNet."""

import keras
import numpy as np
import pytest

import alexnet_tf
from alexnet_tf.analysis import grad_cam


def two_tower_net(softmax=False):
    """conv5_a and conv5_b side by side on an 8x8 input, both towers read by fc8 through a global
    average: the logit's gradient on map k at any position is fc8's weight W[k, c] / 64."""
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv5_a")(x)
    b = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv5_b")(x)
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Concatenate()([a, b]))
    out = keras.layers.Dense(3, name="fc8")(pooled)
    if softmax:
        out = keras.layers.Softmax(name="probabilities")(out)
    return keras.Model(x, out)


def numpy_grad_cam(model, images, class_index):
    """Selvaraju et al.'s formula in numpy, from the towers' activations and fc8's weights."""
    maps = np.concatenate([keras.Model(model.inputs, model.get_layer(f"conv5_{t}").output)
                           .predict(images, verbose=0) for t in "ab"], axis=-1)   # [B, 8, 8, 8]
    kernel, bias = (w.numpy() for w in model.get_layer("fc8").weights)
    logits = maps.mean(axis=(1, 2)) @ kernel + bias
    classes = logits.argmax(-1) if class_index is None else np.full(len(images), class_index)
    alpha = kernel[:, classes].T / 64.0                                  # [B, 8]: d logit / d A
    cam = np.maximum((maps * alpha[:, None, None, :]).sum(-1), 0.0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, cam / np.where(peak > 0, peak, 1), 0.0), classes


@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize("class_index", [None, 0, 2])
def test_grad_cam_is_the_papers_formula_over_both_towers(softmax, class_index):
    model = two_tower_net(softmax)
    images = np.random.default_rng(1).normal(size=(5, 8, 8, 3)).astype(np.float32)
    expected, classes = numpy_grad_cam(model, images, class_index)
    maps, found, _ = grad_cam.maps_and_classes(model, images, class_index)
    np.testing.assert_array_equal(found, classes)
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    assert maps.dtype == np.float32 and maps.min() >= 0 and maps.max() <= 1
    # One tower's maps alone give another answer: both are summed.
    one = np.maximum((keras.Model(model.inputs, model.get_layer("conv5_a").output)
                      .predict(images, verbose=0)
                      * model.get_layer("fc8").weights[0].numpy()[:4, classes].T[:, None, None, :]
                      ).sum(-1), 0)
    assert not np.allclose(maps, one / np.maximum(one.max(axis=(1, 2), keepdims=True), 1e-12))


def square_images(corners, size=32, side=8, seed=0):
    """Grey noise, with a bright square in the given corner (None: none)."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.3, (len(corners), size, size, 3)).astype(np.float32)
    for i, corner in enumerate(corners):
        if corner is not None:
            top, left = corner
            images[i, top:top + side, left:left + side] = 1.0
    return images


def test_the_map_peaks_where_the_object_is():
    """A small network trained to tell images with a bright square from images without: for
    images with the square in one corner, the square class's map is highest in that corner."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    spots = [(int(t), int(l)) for t, l in rng.integers(0, 25, (256, 2))]
    corners = [spot if i % 2 else None for i, spot in enumerate(spots)]
    images, labels = square_images(corners), np.array([i % 2 for i in range(256)])
    x = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv5")(h)
    out = keras.layers.Dense(2, name="fc8")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(x, out)
    model.compile(optimizer=keras.optimizers.Adam(0.01), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, labels, epochs=15, batch_size=32, verbose=0)
    assert model.evaluate(images, labels, verbose=0)[1] > 0.95
    corners = [(0, 0), (0, 24), (24, 0), (24, 24)]
    maps = alexnet_tf.grad_cam(model, square_images(corners, seed=1), class_index=1)
    for (top, left), heat in zip(corners, maps):
        i, j = np.unravel_index(heat.argmax(), heat.shape)
        assert top <= i < top + 8 and left <= j < left + 8, ((top, left), (i, j))


def test_grad_cam_on_the_two_tower_alexnet():
    model = alexnet_tf.AlexNet(weights=None, classes=5)
    images = np.random.default_rng(2).normal(0, 50, (2, 224, 224, 3)).astype(np.float32)
    assert [l.name for l in grad_cam.target_layers(model)] == ["conv5_a", "conv5_b"]
    assert grad_cam.class_scores(model) is model.get_layer("fc8").output
    maps = alexnet_tf.grad_cam(model, images)
    assert maps.shape == (2, 224, 224) and maps.dtype == np.float32
    assert 0.0 <= maps.min() and maps.max() <= 1.0
    assert [float(m.max()) for m in maps if m.max() > 0] in ([1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="no layer 'conv9'.*conv1_a"):
        alexnet_tf.grad_cam(model, images, layer="conv9")
