"""Model formats: one record per kind of model file (how it is named, written, loaded and read), and the
registry that lists them (`formats.registry`).

A low-level package: it imports no stage of the pipeline (export, evaluate, benchmark, derive, ...),
and no torch or onnx at module level, so `dha predict` can load an ONNX file without torch.
"""
