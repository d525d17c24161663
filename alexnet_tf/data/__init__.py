"""The data layer: images in, batches out.

Sources (TFDS datasets, image folders, the built-in `alexnet_shapes`), the paper's
preprocessing (256x256 images, 224 crops, flips, PCA colour offsets: section 4.1), the
training and evaluation input pipelines, the mean image and per-channel statistics, the
ILSVRC-2012 class names (the synset list beside `imagenet.py`), and why an image file is refused
(`images`, which also decodes and resizes for the Python API on JAX and PyTorch).

May import: the foundation (`alexnet_tf.paper`, `config`, `errors`, `files`, `hardware`,
`metrics`, `quiet`, `version`) and its own modules; never `model`, `training`, `serving` or
`analysis`.
"""
