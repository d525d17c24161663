"""The package's version: `alexnet_tf.__version__`, setup.py and each run's history.jsonl read it."""

__version__ = "0.1.0"
