"""The derived child as torch eager (`runs/<name>/derived/child.pt`): a checkpoint of the plain network's
config and weights with the facts export needs, rebuilt through its search space.

derive writes the file (the record has no writer) and reads it back through `read_child` and
`child_network`; `dha evaluate` and `dha benchmark` load it like any exported file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dha_pipeline.errors import DhaError
from dha_pipeline.formats.base import ModelFormat, Runtime, TorchModuleBackend
from dha_pipeline.formats.metadata import input_spec

if TYPE_CHECKING:
    from torch import nn

CHILD_KEYS = {"space", "network", "state_dict", "classes", "mean", "std", "channels", "image_size", "info"}
"""What a derived child file holds."""


def read_child(path: Path) -> dict[str, Any]:
    """The contents of a derived child file (weights as tensors), or one error line if it is none."""
    from dha_pipeline.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    if not CHILD_KEYS <= set(state) or "name" not in state["info"]:
        raise DhaError(f"'{path}' is not a derived child network of this dha version",
                       "pass runs/<name>/derived/child.pt (written by `dha derive`; rerun it for an older run)")
    return state


def child_network(state: dict[str, Any]) -> nn.Module:
    """The child's plain network (eval mode), rebuilt by its search space from `read_child`'s contents."""
    from dha_pipeline.spaces.registry import get_space

    model = get_space(state["space"]).network_from_config(state["network"])
    model.load_state_dict(state["state_dict"])
    return model.eval()


def child_metadata(state: dict[str, Any]) -> dict[str, Any]:
    """The child's metadata: classes, input spec (the center crop evaluation takes, as prepare recorded it) and
    the child's own facts (`info`, which names the run)."""
    crop = float(state["info"]["data"].get("eval_crop", 1.0))
    return {"classes": state["classes"],
            "input": input_spec(int(state["image_size"]), int(state["channels"]), state["mean"], state["std"], crop),
            **state["info"]}


class TorchBackend(TorchModuleBackend):
    """The derived child as a plain torch module on the CPU."""

    name = "torch"

    def __init__(self, path: str | Path) -> None:
        state = read_child(Path(path))
        self.module = child_network(state)
        self.metadata = child_metadata(state)


def load_torch_backend(path: Path, _: Runtime) -> TorchBackend:
    """The loader (torch on the CPU: the runtime does not apply)."""
    return TorchBackend(path)


def read_torch_metadata(path: Path) -> dict[str, Any]:
    """The metadata of a derived child file (the network is not rebuilt)."""
    return child_metadata(read_child(path))


TORCH_EAGER = ModelFormat(name="torch", suffix=".pt", file_name="child.pt", label="torch eager", in_export=False,
                          writer=None, embed=None, loader=load_torch_backend, read_metadata=read_torch_metadata)
