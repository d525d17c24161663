"""Data flags, defined once and shared by the CLIs that read a dataset."""

from absl import flags

from alexnet_tf import input_pipeline, paper

flags.DEFINE_string("dataset", input_pipeline.BUILT_IN,
                    "A TFDS dataset name (alexnet_shapes is built in; imagenet2012 from TFDS' manual "
                    "dir) or image_folder:ROOT (ROOT/<split>/<class>/*.jpg).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: $TFDS_DATA_DIR or "
                    "~/tensorflow_datasets). The built-in dataset is generated here on first use.")
flags.DEFINE_integer("batch_size", paper.BATCH_SIZE, "Global batch size (section 5: 128).")
flags.DEFINE_string("train_split", "train", "Training split.")
flags.DEFINE_string("eval_split", "validation", "Evaluation split.")

flags.register_validator("batch_size", lambda v: v >= 1, message="--batch_size must be >= 1.")
