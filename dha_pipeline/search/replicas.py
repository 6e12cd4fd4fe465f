"""Do the ranks of a torchrun job hold the same model? A fingerprint per part of the learned state,
compared across ranks at the end of a run: theta, b, tau and eta must be bit-identical on every rank
(their gradients are reduced), and each rank's own random stream must differ (rank-specific seeds)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

SHARED_PARTS = ("theta", "b", "tau", "eta", "p", "genotype")


def digest(value: Any) -> str:
    """sha256 of a nested structure of tensors, numbers, strings, lists and dicts: equal exactly when the
    bits of every tensor and the values of everything else are equal."""
    hasher = hashlib.sha256()

    def feed(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            flat = item.detach().cpu().contiguous().reshape(-1)
            hasher.update(f"tensor {item.dtype} {tuple(item.shape)}".encode())
            hasher.update(flat.view(torch.uint8).numpy().tobytes())
        elif isinstance(item, dict):
            for key in sorted(item, key=str):
                hasher.update(f"key {key}".encode())
                feed(item[key])
        elif isinstance(item, (list, tuple)):
            hasher.update(f"list {len(item)}".encode())
            for element in item:
                feed(element)
        else:
            hasher.update(json.dumps(item, default=repr).encode())

    feed(value)
    return hasher.hexdigest()[:16]


def fingerprints(parts: dict[str, Any]) -> dict[str, str]:
    """One digest per named part."""
    return {name: digest(value) for name, value in parts.items()}


def compare(per_rank: list[dict[str, str]]) -> dict[str, Any]:
    """What summary.json records of the ranks: the digests per part, and whether the shared parts agree."""
    parts = {name: [ranked[name] for ranked in per_rank] for name in per_rank[0]}
    disagree = [name for name in SHARED_PARTS if name in parts and len(set(parts[name])) > 1]
    return {"processes": len(per_rank), "shared_parts_agree": not disagree, "disagree": disagree, "parts": parts}
