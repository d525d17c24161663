"""Analysis: what is measured and shown of trained runs.

Evaluation (`evaluate`: single-crop and 10-crop errors, section 6), the run report and the
paper's figures (`report`, `figures`), fc7 retrieval (`retrieval`, figure 4), the ablation
study (`study`, section 6's tables) and the speed benchmarks (`benchmark`).

May import: every layer below it (the foundation, `data`, `model`, `training`, `serving`);
never the Python API (`alexnet_tf.applications`) or `cli`.
"""
