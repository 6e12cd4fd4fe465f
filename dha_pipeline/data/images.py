"""Decoding many image files, collecting the unreadable ones."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dha_pipeline.errors import DhaError
from dha_pipeline.preprocess import decode_image
from dha_pipeline.progress import progress_bar

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def decode_files(paths: Sequence[Path], *, skip_bad: bool, root: Path, description: str
                 ) -> tuple[list[np.ndarray], list[int], list[str], str]:
    """Decode `paths`; returns images, indices kept, bad paths and a sha256 over names and bytes.

    Unreadable files raise one error listing them all, unless `skip_bad`.
    """
    images: list[np.ndarray] = []
    kept: list[int] = []
    bad: list[str] = []
    digest = hashlib.sha256()
    with progress_bar() as progress:
        task = progress.add_task(description, total=len(paths))
        for index, path in enumerate(paths):
            data = path.read_bytes()
            try:
                image = decode_image(data, str(path))
            except DhaError:
                bad.append(str(path))
            else:
                images.append(image)
                kept.append(index)
                digest.update(str(path.relative_to(root)).encode())
                digest.update(hashlib.sha256(data).digest())
            progress.advance(task)
    if bad and not skip_bad:
        raise unreadable_images(bad)
    return images, kept, bad, digest.hexdigest()


def unreadable_images(bad: Sequence[str]) -> DhaError:
    """The one error that lists unreadable files (the first 20) and how to skip them."""
    shown = ", ".join(bad[:20]) + (f" ... ({len(bad)} in all)" if len(bad) > 20 else "")
    return DhaError(f"{len(bad)} unreadable image(s): {shown}",
                    "remove or fix them, or pass --skip-bad (data.skip_bad = true) to skip them")
