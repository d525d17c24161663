"""Every number the paper fixes, named once.

Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional
Neural Networks", NIPS 2012. Section numbers below refer to that paper; the
project's reading of it is ../shared/PAPER.md and docs/PAPER_CHOICES.md.
"""

# --- Section 2: data -------------------------------------------------------
NUM_CLASSES = 1000            # ILSVRC: 1000 classes.
RESIZE_SHORTER_SIDE = 256     # "rescaled ... such that the shorter side was of length 256"
CENTRAL_CROP = 256            # "... and then cropped out the central 256x256 patch"

# --- Section 3 / figure 2: architecture -------------------------------------
IMAGE_SIZE = 224              # Input 224x224x3; we zero-pad conv1 by 2 pixels to get 55x55.
CONV1_PADDING = 2             # Our choice (docs/PAPER_CHOICES.md): 224 + 2*2 = 228 -> 55.
NUM_TOWERS = 2                # Section 3.2: the net is spread across two GPUs.

# (filters in total, kernel size, stride, padding) for the five conv layers.
CONV1 = (96, 11, 4)           # 96 kernels 11x11x3, stride 4 (48 per GPU).
CONV2 = (256, 5, 1)           # 256 kernels 5x5x48, pad 2 (128 per GPU, same GPU only).
CONV3 = (384, 3, 1)           # 384 kernels 3x3x256, pad 1 (192 per GPU, from BOTH GPUs).
CONV4 = (384, 3, 1)           # 384 kernels 3x3x192, pad 1 (192 per GPU, same GPU only).
CONV5 = (256, 3, 1)           # 256 kernels 3x3x192, pad 1 (128 per GPU, same GPU only).
FC_UNITS = 4096               # fc6 and fc7: 4096 neurons each (2048 per GPU).

# Section 3.3: local response normalisation, after ReLU of conv1 and conv2.
LRN_N = 5                     # "n adjacent kernel maps"
LRN_K = 2.0                   # k
LRN_ALPHA = 1e-4              # alpha multiplies the plain sum (not alpha / n)
LRN_BETA = 0.75               # beta

# Section 3.4: overlapping pooling, z x z windows spaced s apart.
POOL_SIZE = 3                 # z = 3
POOL_STRIDE = 2               # s = 2

# Parameter counts the architecture must reproduce (PAPER.md, section 3).
PARAMS_TWO_TOWERS = 60_965_224
PARAMS_ONE_TOWER = 62_378_344

# --- Section 4: reducing overfitting ----------------------------------------
DROPOUT_RATE = 0.5            # Section 4.2: dropout 0.5 on fc6 and fc7 outputs.
PCA_STDDEV = 0.1              # Section 4.1: a_i ~ N(0, 0.1).
NUM_TEST_CROPS = 10           # Section 4.1: four corners + centre, and their reflections.

# --- Section 5: details of learning -----------------------------------------
BATCH_SIZE = 128
MOMENTUM = 0.9
WEIGHT_DECAY = 0.0005         # Enters the momentum; spares biases (our reading, see docs).
LEARNING_RATE = 0.01
LR_DECAY_FACTOR = 10.0        # "divided the learning rate by 10 when the validation error ... stopped improving"
LR_MAX_DECAYS = 3             # "reduced three times prior to termination"
EPOCHS = 90                   # "roughly 90 cycles through the training set"
INIT_STDDEV = 0.01            # Weights ~ N(0, 0.01).
# Biases initialised to 1 in these layers (section 5); 0 everywhere else.
BIAS_ONE_LAYERS = ("conv2", "conv4", "conv5", "fc6", "fc7")
