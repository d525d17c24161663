"""alexnet-import's job: a Caffe bvlc_alexnet caffemodel -> a run directory every tool reads.

The run directory (`rundir`) holds the checkpoint (ckpt-0), the model options
that reproduce Caffe's forward pass (`caffe.AlexNetWeights` says which LRN and
pooling the file uses), the statistics (the mean image of --mean, or Caffe's
per-channel means) and the 1000 ILSVRC-2012 classes as synset ids in TFDS'
order (`imagenet`). It is written into a hidden folder and renamed into place:
bad input leaves nothing behind.

Example:

    path = import_caffemodel("bvlc_alexnet.caffemodel", "runs/bvlc_alexnet",
                             mean="imagenet_mean.binaryproto")
"""

import os

import numpy as np

from alexnet_tf import files
from alexnet_tf.config import TrainConfig
from alexnet_tf.data import dataset_stats, imagenet, preprocessing
from alexnet_tf.model import caffe
from alexnet_tf.training import state
from alexnet_tf.training.restore import build_model
from alexnet_tf.training.rundir import Run, RunDir, variables_bytes

# ImageNet's RGB covariance (pixels in [0, 1]): the eigenvalues and eigenvectors (columns)
# published with fb.resnet.torch (datasets/imagenet.lua), for PCA colour augmentation when an
# imported run is fine-tuned. The caffemodel carries no such statistics.
IMAGENET_EIGENVALUES = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGENVECTORS = ((-0.5675, 0.7192, 0.4009),
                         (-0.5808, -0.0045, -0.8140),
                         (-0.5836, -0.6948, 0.4203))
IMAGENET_TRAIN_IMAGES = 1_281_167     # ILSVRC-2012's training set, which Caffe's mean is over


def imported_config(model_dir, weights, mean_mode):
    """The TrainConfig of an imported run: Caffe's forward pass and test-time preprocessing."""
    model = caffe.network_config(weights.lrn_k, weights.lrn_alpha, weights.pool_rounding)
    return TrainConfig(model_dir=model_dir, dataset="imagenet2012", mean_mode=mean_mode,
                       input_scale="none", resize=preprocessing.SQUASH, model=model)


def imported_stats(mean_image=None):
    """`dataset_stats.Stats` of an import: --mean's image, or Caffe's channel means everywhere."""
    if mean_image is None:
        mean_image = np.broadcast_to(caffe.rgb_mean(),
                                     (caffe.MEAN_SIZE, caffe.MEAN_SIZE, 3)).copy()
    return dataset_stats.Stats(
        mean_image=mean_image.astype(np.float32),
        mean_channel=mean_image.reshape(-1, 3).mean(axis=0, dtype=np.float64).astype(np.float32),
        eigenvalues=np.asarray(IMAGENET_EIGENVALUES, np.float32),
        eigenvectors=np.asarray(IMAGENET_EIGENVECTORS, np.float32),
        num_images=IMAGENET_TRAIN_IMAGES)


def import_caffemodel(caffemodel, model_dir, mean=None, log=print):
    """Writes the run directory `model_dir` from a bvlc_alexnet caffemodel; returns its `Run`.

    Everything is read and checked before anything is written; a bad file
    raises a one-line `caffe.CaffeError` and `model_dir` stays as it was.
    """
    files.require_new_directory(model_dir)
    return write_run(caffe.load(caffemodel, mean), model_dir, log)


def write_run(loaded, model_dir, log=print):
    """Writes the run directory of a `caffe.Loaded` caffemodel, atomically; returns its `Run`."""
    files.require_new_directory(model_dir)
    log(loaded.description)
    weights = loaded.weights
    config = imported_config(model_dir, weights, "image" if loaded.mean else "channel")
    mean = (os.path.abspath(loaded.mean) if loaded.mean else
            f"Caffe's per-channel BGR mean {caffe.CAFFE_BGR_MEAN}")
    run = Run(config, imagenet.synsets(), runtime={"imported": {
        "caffemodel": os.path.abspath(loaded.caffemodel), "sha1": loaded.sha1,
        "published_sha1": caffe.PUBLISHED_SHA1, "mean": mean,
        "class_order": "sorted synset ids (TFDS imagenet2012, Caffe's synsets.txt)"}})
    model = build_model(model_dir, run, initialize=False)
    caffe.assign(model, weights)              # every layer's weights
    step, epoch = state.counters()
    needed = 2 * variables_bytes(model.variables)
    with files.staged_directory(model_dir, needed, "free space and import again") as staging:
        staged = RunDir(staging)
        staged.write(run, imported_stats(loaded.mean_image))
        checkpoint = state.checkpoint_of(model, step, epoch)
        latest, _ = staged.checkpoint_managers(checkpoint, step, keep=1)
        staged.save(latest, 0, needed)
    return run
