"""Genotypes of the DARTS cell space: which (op, input) pairs each node of a cell keeps."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dha_pipeline.errors import DhaError
from dha_pipeline.spaces.darts.operations import PRIMITIVES

Edge = tuple[str, int]


@dataclass(frozen=True)
class Genotype:
    """Two (op, input index) edges per intermediate node, for normal and reduction cells."""

    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {key: [list(e) if isinstance(e, tuple) else e for e in value] for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Genotype:
        """Inverse of `to_dict`, with validation."""
        try:
            genotype = cls(normal=tuple((str(op), int(i)) for op, i in raw["normal"]),
                           normal_concat=tuple(int(i) for i in raw["normal_concat"]),
                           reduce=tuple((str(op), int(i)) for op, i in raw["reduce"]),
                           reduce_concat=tuple(int(i) for i in raw["reduce_concat"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DhaError(f"malformed genotype ({exc})", "give normal, normal_concat, reduce, reduce_concat") from None
        genotype.validate()
        return genotype

    def validate(self) -> None:
        """Check op names and that every edge reads an earlier state."""
        for cell in (self.normal, self.reduce):
            if len(cell) % 2:
                raise DhaError("a genotype cell needs two edges per node")
            for position, (op, source) in enumerate(cell):
                if op not in PRIMITIVES:
                    raise DhaError(f"genotype op '{op}' is not in the space", "use one of " + ", ".join(PRIMITIVES))
                if not 0 <= source < 2 + position // 2:
                    raise DhaError(f"genotype edge ({op}, {source}) reads a state that does not exist yet")


DARTS_V2 = Genotype(
    normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)),
    reduce_concat=(2, 3, 4, 5),
)

DARTS_V1 = Genotype(
    normal=(("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)),
    reduce_concat=(2, 3, 4, 5),
)

KNOWN_GENOTYPES: dict[str, Genotype] = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2}


def known_genotype(name: str) -> Genotype:
    """A published genotype by name."""
    if name not in KNOWN_GENOTYPES:
        raise DhaError(f"unknown genotype '{name}'", "use one of " + ", ".join(KNOWN_GENOTYPES))
    return KNOWN_GENOTYPES[name]
