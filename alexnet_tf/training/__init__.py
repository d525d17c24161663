"""Training: a run directory and the loop that fills it.

The custom `tf.function` loop (`train`), the paper's SGD with momentum and weight decay
(`optimizer`, section 5), the learning-rate schedules, the run's state and checkpoints
(`state`, `restore`), the run directory and its files (`rundir`, `ownership`, `summaries`),
the precision and device choices of a run (`runtime`), fine-tuning (`finetune`) and the import
of Caffe's weights as a run (`import_caffe`).

May import: the foundation, `data` and `model`; never `serving` or `analysis`.
"""
