"""Seeded mutations of valid files, shared by test_fuzz.py and its child process.

Not collected by pytest (the name does not start with test_).
"""

import json
import random

# Byte-level mutations, in turn; each case's choices come from one seeded generator.
BYTE_MUTATIONS = ("bit flips", "truncated", "random bytes", "huge length field", "garbage tail",
                  "cut out", "zero-filled")
# JSON values put in place of a random value of a valid document.
HOSTILE_VALUES = (None, -1, 0, 2 ** 63, -1e308, 1e308, "", "x" * 100_000, [], {}, True,
                  [[1, 2, 3]] * 3, {"a": 1})


def byte_mutant(data, rng, kind, head=None):
    """`data` mutated by `kind` (BYTE_MUTATIONS); positions fall in the first `head` bytes
    half of the time (a file's structure), anywhere the other half."""
    def position(limit=len(data)):
        span = head if head and rng.random() < 0.5 else limit
        return rng.randrange(max(1, min(span, limit)))

    buffer = bytearray(data)
    if kind == "bit flips":
        for _ in range(rng.randint(1, 8)):
            buffer[position()] ^= 1 << rng.randrange(8)
    elif kind == "truncated":
        del buffer[position():]
    elif kind == "random bytes":
        return rng.randbytes(min(len(data), 1 << 20))
    elif kind == "huge length field":
        at = position()
        buffer[at:at + 5] = b"\xff\xff\xff\xff\x0f"       # a varint of 2**32 - 1
    elif kind == "garbage tail":
        buffer += rng.randbytes(rng.randint(1, 4096))
    elif kind == "cut out":
        at = position()
        del buffer[at:at + rng.randint(1, 1024)]
    elif kind == "zero-filled":
        at = position()
        buffer[at:at + rng.randint(1, 4096)] = bytes(min(4096, len(buffer) - at))
    else:
        raise ValueError(kind)
    return bytes(buffer)


def byte_mutants(data, seed, count, head=None):
    """[(name, bytes)]: the empty file, then `count - 1` mutations cycling BYTE_MUTATIONS."""
    rng = random.Random(seed)
    out = [("empty", b"")]
    for i in range(count - 1):
        kind = BYTE_MUTATIONS[i % len(BYTE_MUTATIONS)]
        out.append((f"{kind} #{i}", byte_mutant(data, rng, kind, head)))
    return out


def _random_path(document, rng):
    """A path of keys into `document`: each level stops with probability 1/3, else descends."""
    path, node = (), document
    while isinstance(node, (dict, list)) and node and (not path or rng.random() < 2 / 3):
        key = rng.choice(list(node.keys()) if isinstance(node, dict) else range(len(node)))
        path, node = path + (key,), node[key]
    return path


def json_mutants(document, seed, count):
    """[(name, bytes)]: `count` documents with one value (or the whole) replaced by a hostile one."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        path = _random_path(document, rng) if rng.random() > 0.05 else ()
        value = rng.choice(HOSTILE_VALUES)
        copy = json.loads(json.dumps(document))
        if not path:
            copy = value
        else:
            parent = copy
            for key in path[:-1]:
                parent = parent[key]
            if rng.random() < 0.15 and isinstance(parent, dict):
                del parent[path[-1]]
                value = "(removed)"
            else:
                parent[path[-1]] = value
        name = "/".join(map(str, path)) or "(document)"
        out.append((f"json {name} = {str(value)[:20]} #{i}", json.dumps(copy).encode()))
    return out
