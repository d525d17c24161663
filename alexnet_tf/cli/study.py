"""alexnet-study: re-run the paper's claims (sections 1, 3, 4 and figure 1) and compare.

    alexnet-study --out_dir=study --preset=cpu            # the built-in dataset, ~75 min on 2 cores
    alexnet-study --out_dir=study --preset=paper --seeds=0,1,2,3,4   # ImageNet, for GPUs

Writes OUT/results.json, OUT/results.md and OUT/figure1.png; the same command
again skips the finished runs and resumes the unfinished one.
"""

import sys

from absl import app, flags

from alexnet_tf import errors
from alexnet_tf.analysis import study
from alexnet_tf.cli import common

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", None, "Where the runs and the results go.", required=True)
flags.DEFINE_enum("preset", "cpu", list(study.PRESETS), "smoke: a few steps each on the tiny "
                  "built-in dataset (tests); cpu: the built-in dataset, every ablation once, "
                  "within 90 minutes on a 2-core CPU; paper: the paper's recipe on imagenet2012.")
flags.DEFINE_list("seeds", ["0"], "Seeds: each ablation is trained once per seed; with several, "
                  "the baseline's runs are also evaluated as an ensemble.")
flags.DEFINE_list("only", [], f"Only these runs (of {', '.join(study.NAMES)}; "
                  f"{study.replaced_rows()}).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: $TFDS_DATA_DIR or "
                    "~/tensorflow_datasets).")
flags.DEFINE_float("threshold", None, "Figure 1's training error (default: the preset's: 0.25 "
                   "for paper, as the paper; 0.5 for cpu, which trains 2-4 epochs).")
common.path_flags(out_dir=common.OUT_DIR, data_dir=common.OUT_DIR)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    common.quiet_libraries()
    try:
        seeds = tuple(int(s) for s in FLAGS.seeds)
    except ValueError:
        raise app.UsageError(f"--seeds must be integers, e.g. 0,1; got {FLAGS.seeds}") from None
    try:
        study.run_study(FLAGS.out_dir, FLAGS.preset, seeds, only=FLAGS.only,
                        data_dir=FLAGS.data_dir, threshold=FLAGS.threshold,
                        log=lambda line: print(line, flush=True))
    except errors.UserError as error:
        print(f"alexnet-study: error: {error}", file=sys.stderr)
        sys.exit(1)


def run():
    common.run_tool("study", main)


if __name__ == "__main__":
    run()
