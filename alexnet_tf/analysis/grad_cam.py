"""Grad-CAM (Selvaraju et al., 2017): where in an image a class's score comes from.

For a class c and a convolutional layer with maps A_k, each map is weighted by the mean of the
score's gradient over its positions, alpha_k = mean_ij d y_c / d A_k(i, j), and the map is
ReLU(sum_k alpha_k A_k), resized to the input (bilinear) and divided by its maximum. y_c is the
class's logit (fc8's output, before the softmax).

AlexNet's two towers each have a conv5 of 128 maps on the same 13x13 grid, and fc6 reads both: the
sum runs over the 256 maps of both towers (the same as adding the towers' weighted sums before the
ReLU). The gradients come from TensorFlow (`tf.GradientTape`).
"""

import keras
import numpy as np
import tensorflow as tf

LAYER = "conv5"


def target_layers(model, layer=LAYER):
    """The layer named `layer`, or its towers `<layer>_a` and `<layer>_b`."""
    names = [l.name for l in model.layers]
    if layer in names:
        return [model.get_layer(layer)]
    towers = [model.get_layer(f"{layer}_{t}") for t in "ab" if f"{layer}_{t}" in names]
    if not towers:
        convolutions = [n for n in names if n.startswith("conv")]
        raise ValueError(f"the model has no layer {layer!r} (nor {layer}_a, {layer}_b); pass "
                         f"layer= one of {', '.join(convolutions) or 'its layers'}")
    return towers


def class_scores(model):
    """The model's logits: the input of a final softmax (or other activation), else its output."""
    last = model.layers[-1]
    if isinstance(last, (keras.layers.Softmax, keras.layers.Activation)):
        return last.input
    return model.output


def grad_cam(model, images, class_index=None, layer=LAYER):
    """Grad-CAM maps of `images` for a class, from `layer` (both towers' maps together).

    Args:
      model: A functional Keras model: `alexnet_tf.AlexNet(...)`, a run's network, or any model
        with a layer named `layer` (or `<layer>_a` and `<layer>_b`).
      images: `[batch, height, width, 3]` as the model takes them (after `preprocess_input`).
      class_index: The class per image: None (each image's top class), an int, or one per image.
      layer: The convolutional layer whose maps are weighted ("conv5": the paper's last).

    Returns:
      float32 `[batch, height, width]` in [0, 1]: 1 at each map's maximum; a map with no
      positive evidence for the class is all 0.

    Example:

    >>> model = alexnet_tf.AlexNet(weights="bvlc_alexnet")
    >>> x = alexnet_tf.preprocess_input(alexnet_tf.load_image("cat.jpg")[None])
    >>> maps = alexnet_tf.grad_cam(model, x)       # maps[0]: 227x227, 1 where it looked most
    """
    return maps_and_classes(model, images, class_index, layer)[0]


def maps_and_classes(model, images, class_index=None, layer=LAYER):
    """`grad_cam`'s maps, and the class of each map (int) with its softmax probability."""
    layers = target_layers(model, layer)
    probe = keras.Model(model.inputs, [l.output for l in layers] + [class_scores(model)])
    images = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        *maps, scores = probe(images, training=False)
        scores = tf.cast(scores, tf.float32)
        if class_index is None:
            chosen = tf.argmax(scores, axis=-1, output_type=tf.int32)
        else:
            chosen = tf.broadcast_to(tf.constant(class_index, tf.int32), tf.shape(scores)[:1])
        # Each image's score depends only on its own maps, so one gradient of the sum serves all.
        total = tf.reduce_sum(tf.gather(scores, chosen, batch_dims=1))
    gradients = tape.gradient(total, maps)
    probabilities = tf.gather(tf.nn.softmax(scores), chosen, batch_dims=1)
    cam = 0.0
    for activations, gradient in zip(maps, gradients):
        activations, gradient = tf.cast(activations, tf.float32), tf.cast(gradient, tf.float32)
        alpha = tf.reduce_mean(gradient, axis=[1, 2], keepdims=True)        # [B, 1, 1, K]
        cam += tf.reduce_sum(alpha * activations, axis=-1)                  # [B, h, w]
    cam = tf.nn.relu(cam)[..., None]
    cam = tf.image.resize(cam, tf.shape(images)[1:3], method="bilinear")[..., 0]
    peak = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
    cam = tf.math.divide_no_nan(cam, peak)
    return np.clip(cam.numpy(), 0.0, 1.0), chosen.numpy(), probabilities.numpy()
