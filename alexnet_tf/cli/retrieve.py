"""alexnet-retrieve: the training images nearest a query by fc7 features; figure 4 (right) PNG."""

import os
import sys

import tensorflow as tf
from absl import flags

from alexnet_tf import errors, figures, files
from alexnet_tf.analysis import retrieval
from alexnet_tf.cli import common
from alexnet_tf.data import preprocessing, sources
from alexnet_tf.serving import export

FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model", None, "An export, or an export base (its newest version).")
flags.DEFINE_string("model_dir", None, "Instead of --saved_model: a training run's checkpoint.")
flags.DEFINE_string("checkpoint", "best", "With --model_dir: best, latest, or DIR/ckpt-N.")
flags.DEFINE_string("dataset", sources.BUILT_IN, "Dataset whose images are indexed.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
flags.DEFINE_string("split", "train", "Split to index (the paper retrieves training images).")
flags.DEFINE_string("index", None, "The feature index (.npz): reused when it was built from the "
                    "same model, dataset and split, else (re)built here.", required=True)
flags.DEFINE_integer("k", retrieval.NEIGHBOURS, "Neighbours per query.", lower_bound=1)
flags.DEFINE_string("query_split", "validation", "Without query files: queries from this split.")
flags.DEFINE_integer("num_queries", 5, "Without query files: how many queries.", lower_bound=1)
common.define_max_megapixels()
common.define_inference_flags(jit=False)      # with --model_dir: what its graph computes in
flags.DEFINE_string("output", None, "The PNG grid: a row per query, then neighbours; default "
                    "retrieval.png, or the first free retrieval-N.png (an earlier grid is kept). "
                    "A name given here is overwritten.")
DEFAULT_OUTPUT = "retrieval.png"
common.path_flags(saved_model=common.IN_PATH, model_dir=common.IN_DIR, data_dir=common.OUT_DIR,
                  index=common.OUT_FILE, output=common.OUT_FILE)


def read_queries(paths, source):
    """[(label, encoded bytes)] from files (label = path), or from --query_split; plus failures."""
    if not paths:
        ds = source.encoded(FLAGS.query_split).take(FLAGS.num_queries)
        return [(f"{FLAGS.query_split} #{i} ({source.class_names[int(y)]})", x)
                for i, (x, y) in enumerate(ds.as_numpy_iterator())], 0
    queries, failures = [], 0
    for path in paths:
        data, problem = common.read_file(path)
        problem = problem or preprocessing.image_problem(data, FLAGS.max_megapixels)
        if problem:
            print(f"alexnet-retrieve: error: {path}: {problem}", file=sys.stderr)
            failures += 1
        else:
            queries.append((path, data))
    return queries, failures


def main(argv):
    common.quiet_libraries()
    try:
        precision = common.checkpoint_precision("retrieve")
        signatures, weights = export.load_signatures(FLAGS.saved_model, FLAGS.model_dir,
                                                     FLAGS.checkpoint, precision, sources.notice)
        source = sources.open_source(FLAGS.dataset, FLAGS.data_dir)
        features_fn = signatures[export.SIGNATURE_FEATURES]
        meta = {**weights, "dataset": source.name, "split": FLAGS.split,
                "examples": source.num_examples(FLAGS.split)}
        index, why = retrieval.load_index(FLAGS.index, meta, features_fn, source)
        if index is not None and why:
            sources.notice(f"Using the index {FLAGS.index}: {why}.")
        elif index is None:
            sources.notice(f"Indexing the fc7 features of {source.name}/{FLAGS.split} "
                           f"into {FLAGS.index}: {why}.")
            index = retrieval.build_index(features_fn, source, FLAGS.split)
            retrieval.save_index(FLAGS.index, *index, meta)
        queries, failures = read_queries(argv[1:], source)
    except errors.UserError as error:
        print(f"alexnet-retrieve: error: {error}", file=sys.stderr)
        sys.exit(1)
    features, labels = index
    rows, captions = [], []
    for name, encoded in queries:
        try:
            query = features_fn(image_bytes=tf.constant([encoded]))["features"].numpy()
        except tf.errors.InvalidArgumentError as error:
            print(f"alexnet-retrieve: error: {name}: {common.serving_error(error)}",
                  file=sys.stderr)
            failures += 1
            continue
        positions, distances = retrieval.nearest(features, query, FLAGS.k)
        print(name)
        for rank, (p, d) in enumerate(zip(positions[0], distances[0]), 1):
            print(f"  {rank}. {FLAGS.split} #{p:<7} {source.class_names[labels[p]]:<20} "
                  f"distance {d:.2f}")
        neighbours = retrieval.encoded_at(source, FLAGS.split, positions[0])
        rows.append([preprocessing.thumbnail(x, figures.THUMBNAIL) for x in [encoded, *neighbours]])
        # Under each tile: the query's file name; each neighbour's class and its fc7 distance.
        captions.append([f"query\n{os.path.basename(name)}"] + [
            f"{source.class_names[labels[p]]}\nfc7 dist {d:.1f}" for p, d in zip(positions[0],
                                                                              distances[0])])
    if rows:
        output = FLAGS.output or files.unused_path(DEFAULT_OUTPUT)
        figures.write_png(output, figures.retrieval_figure(rows, captions))
        print(f"wrote {output} (a row per query, framed, then its neighbours: class and "
              "fc7 distance)")
    return 1 if failures else 0


def run():
    common.run_tool("retrieve", main)


if __name__ == "__main__":
    run()
