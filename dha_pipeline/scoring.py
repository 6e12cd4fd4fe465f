"""A model's logits over a whole split: the one loop that evaluate, export's int8 gate and benchmark share."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dha_pipeline.data.batches import BatchSource
from dha_pipeline.preprocess import model_input
from dha_pipeline.progress import progress_bar


def split_logits(model: Callable[[np.ndarray], np.ndarray], source: BatchSource, mean: list[float],
                 std: list[float], classes: int, *, batch_size: int = 256, description: str = "scoring"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(float32 logits, int64 labels) of `model` (float32 NCHW -> logits) over every image of `source`,
    preprocessed with the model's `mean` and `std`, under a progress bar. A streamed split that skips
    unreadable files (data.skip_bad) gives fewer rows than `len(source)`."""
    logits = np.empty((len(source), classes), dtype=np.float32)
    labels = np.empty(len(source), dtype=np.int64)
    done = 0
    with progress_bar() as progress:
        task = progress.add_task(description, total=len(source))
        for images, batch_labels in source.batches(batch_size):
            logits[done:done + len(images)] = model(model_input(images, mean, std))
            labels[done:done + len(images)] = batch_labels
            done += len(images)
            progress.advance(task, len(images))
    return logits[:done], labels[:done]
