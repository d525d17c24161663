"""The 1000 ILSVRC-2012 classes: synset ids in their index order and their WordNet names.

`data/ilsvrc2012_synset_words.txt` (shipped with the package, so no network is
needed) holds one line per class, `<synset id> <names>`, like Caffe's
`data/ilsvrc12/synset_words.txt`. Its order is the sorted synset ids, which is
the order of TFDS' `imagenet2012` labels (its `labels.txt`) and of Caffe's
class indices (`synsets.txt`): class i of a Caffe model is label i of TFDS.
The names are the list TFDS ships (`datasets/siscore/labels.py`, from
gist yrevar/942d3a0ac09ec9e5eb3a).
"""

import functools
import os

SYNSET_WORDS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "ilsvrc2012_synset_words.txt")
NUM_CLASSES = 1000


@functools.lru_cache(maxsize=None)
def _entries():
    with open(SYNSET_WORDS, encoding="utf-8") as f:
        entries = [tuple(line.rstrip("\n").split(" ", 1)) for line in f if line.strip()]
    if len(entries) != NUM_CLASSES:
        raise RuntimeError(f"{SYNSET_WORDS} has {len(entries)} classes, not {NUM_CLASSES}; "
                           "reinstall alexnet_tf")
    return tuple(entries)


def synsets():
    """The 1000 synset ids (e.g. 'n01440764'), in class-index order."""
    return [synset for synset, _ in _entries()]


def names():
    """The 1000 human-readable names (e.g. 'tench, Tinca tinca'), in class-index order."""
    return [name for _, name in _entries()]


@functools.lru_cache(maxsize=None)
def _by_synset():
    return dict(_entries())


def describe(class_name):
    """'n02123045' -> 'tabby, tabby cat'; any other class name -> itself."""
    return _by_synset().get(class_name, class_name)
