"""Serving: a trained run as files that other programs run.

The SavedModel with its TF Serving signatures and version folders (`export`), and the
deployment files (LiteRT, ONNX, their quantizations) with the runtimes that check and run them
(`deploy`).

May import: the foundation, `data`, `model` and `training`; never `analysis`.
"""
