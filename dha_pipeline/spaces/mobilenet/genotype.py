"""Genotypes of the MobileNet space: one choice per searchable layer, and the known hand-designed ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dha_pipeline.errors import DhaError
from dha_pipeline.spaces.mobilenet.backbone import LayerSpec
from dha_pipeline.spaces.mobilenet.blocks import MBCONV_CHOICES, SKIP

UNIFORM_GENOTYPES: dict[str, str] = {"MBV2": "k3_e6", "MBV2_E3": "k3_e3", "K5_E6": "k5_e6", "K7_E6": "k7_e6"}
"""Known architectures that use one choice in every layer: MBV2 is MobileNetV2's (kernel 3, expansion
6 everywhere); the others bracket the space's cost (MBV2_E3 small, K7_E6 the largest network)."""


@dataclass(frozen=True)
class MobileGenotype:
    """The choice of every searchable layer: an MBConv name such as 'k5_e6', or 'skip'."""

    layers: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"layers": list(self.layers)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MobileGenotype:
        """Inverse of `to_dict`, with validation of the choice names."""
        try:
            genotype = cls(tuple(str(choice) for choice in raw["layers"]))
        except (KeyError, TypeError) as exc:
            raise DhaError(f"malformed MobileNet genotype ({exc})", "give {\"layers\": [\"k3_e6\", ...]}") from None
        for choice in genotype.layers:
            if choice not in MBCONV_CHOICES + (SKIP,):
                raise DhaError(f"genotype layer choice '{choice}' is not in the MobileNet space",
                               "use one of " + ", ".join(MBCONV_CHOICES + (SKIP,)))
        return genotype

    def check(self, specs: list[LayerSpec]) -> None:
        """The genotype fits these layers: one choice each, 'skip' only where a layer has a residual."""
        if len(self.layers) != len(specs):
            raise DhaError(f"the genotype has {len(self.layers)} layer choices but the network has {len(specs)} "
                           "searchable layers", "make model.stage_depths match the genotype")
        for index, (choice, spec) in enumerate(zip(self.layers, specs, strict=True)):
            if choice not in spec.choices:
                raise DhaError(f"layer {index} cannot be '{choice}' (stride {spec.stride}, "
                               f"{spec.in_channels}->{spec.out_channels} channels)", "only residual layers skip")

    def count(self, choice: str) -> int:
        """How many layers make this choice."""
        return sum(layer == choice for layer in self.layers)


def known_genotype(name: str, specs: list[LayerSpec]) -> MobileGenotype:
    """A known architecture by name, for the layers `specs`."""
    if name not in UNIFORM_GENOTYPES:
        raise DhaError(f"unknown MobileNet genotype '{name}'", "use one of " + ", ".join(UNIFORM_GENOTYPES))
    return MobileGenotype((UNIFORM_GENOTYPES[name],) * len(specs))
