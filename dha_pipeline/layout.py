"""Every path under `runs/<name>/` and `exports/<name>/` (docs/ARCHITECTURE.md, "Files").

No other module spells a file name of a run or an export: they ask a `RunLayout` or an
`ExportLayout`. Both are plain values, so a path can be computed without touching the disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dha_pipeline.formats.registry import FORMATS, PRIMARY_ORDER, get_format

MANIFEST = "manifest.json"
"""The cache's manifest, inside any cache directory."""
LATENCY_TABLE = "latency_table.json"
SEARCH_LOGS = ("policy", "hparams", "arch")
"""Per-epoch CSV logs of the search, under search/."""


def shared_latency_table(runs_dir: str | Path) -> Path:
    """<runs_dir>/latency_table.json: the latency table every run under `runs_dir` shares by default."""
    return Path(runs_dir) / LATENCY_TABLE


def cache_file(split: str, kind: str) -> str:
    """Name of the .npy file in a cache directory holding a split's images (kind 'x') or labels ('y')."""
    return f"{split}_{kind}.npy"


@dataclass(frozen=True)
class ExportLayout:
    """exports/<name>/: the deployable files and their reports."""

    root: Path

    def model(self, fmt: str) -> Path:
        """The model file of an export format (its record's file name)."""
        record = get_format(fmt)
        if not record.in_export:
            raise KeyError(f"format '{fmt}' has no file in an export folder")
        return self.root / record.file_name

    @property
    def metadata(self) -> Path:
        """metadata.json, the model's contract."""
        return self.root / "metadata.json"

    @property
    def model_card(self) -> Path:
        """MODEL_CARD.md."""
        return self.root / "MODEL_CARD.md"

    @property
    def evaluation(self) -> Path:
        """evaluation.json of the export's primary model."""
        return self.root / "evaluation.json"

    def evaluation_of(self, model: Path) -> Path:
        """Where `dha evaluate MODEL` writes its report: evaluation.json for the export's primary model
        (the first of formats.registry.PRIMARY_ORDER present), evaluation.<file>.json for any other."""
        present = [fmt for fmt in PRIMARY_ORDER if self.model(fmt).exists()]
        if present and model == self.model(present[0]):
            return self.evaluation
        return model.parent / f"evaluation.{model.name}.json"

    @staticmethod
    def confusion_of(evaluation: Path) -> Path:
        """The confusion-matrix PNG beside an evaluation report."""
        return evaluation.with_suffix(".confusion.png")

    def primary_model(self, formats: list[str]) -> Path:
        """The file `dha run` evaluates and prints next: the first of formats.registry.PRIMARY_ORDER among
        `formats`."""
        return self.model(next(fmt for fmt in PRIMARY_ORDER if fmt in formats))

    def evaluation_of_int8(self) -> Path:
        """The evaluation report of model.int8.onnx."""
        return self.evaluation_of(self.model("onnx_int8"))

    @property
    def benchmark_csv(self) -> Path:
        """benchmark.csv: `dha benchmark`'s table."""
        return self.root / "benchmark.csv"

    @property
    def benchmark_json(self) -> Path:
        """benchmark.json: the rows of benchmark.csv and each format's top-1 per class."""
        return self.root / "benchmark.json"

    @property
    def benchmark_png(self) -> Path:
        """benchmark.png: top-1 against batch-1 latency, one point per format."""
        return self.root / "benchmark.png"

    def reports(self) -> list[Path]:
        """Every report in the folder about its model: evaluations, their confusion matrices, the benchmark."""
        found = [*self.root.glob("evaluation*.json"), *self.root.glob("evaluation*.confusion.png")]
        return sorted(found + [p for p in (self.benchmark_csv, self.benchmark_json, self.benchmark_png)
                              if p.exists()])

    @property
    def network_png(self) -> Path:
        """network.png: the chosen network, drawn for the model card."""
        return self.root / "network.png"


@dataclass(frozen=True)
class RunLayout:
    """runs/<name>/ and the export directory that belongs to it."""

    root: Path
    exports: ExportLayout

    @classmethod
    def of(cls, runs_dir: str | Path, exports_dir: str | Path, name: str) -> RunLayout:
        """The layout of run `name`."""
        return cls(Path(runs_dir) / name, ExportLayout(Path(exports_dir) / name))

    @property
    def resolved_recipe(self) -> Path:
        """recipe.resolved.toml: the recipe as run."""
        return self.root / "recipe.resolved.toml"

    @property
    def smoke_data(self) -> Path:
        """smoke_data.npz: the synthetic images of a `dha run --smoke` run."""
        return self.root / "smoke_data.npz"

    @property
    def own_latency_table(self) -> Path:
        """latency_table.json of this run alone (a smoke run's, timed with few runs, kept apart)."""
        return self.root / LATENCY_TABLE

    @property
    def recipe_sha256(self) -> Path:
        """recipe.sha256: the hash of the resolved recipe."""
        return self.root / "recipe.sha256"

    @property
    def cache(self) -> Path:
        """cache/: the prepared splits."""
        return self.root / "cache"

    @property
    def manifest(self) -> Path:
        """cache/manifest.json."""
        return self.cache / MANIFEST

    @property
    def bad_files(self) -> Path:
        """cache/bad_files.json: unreadable images skipped by prepare."""
        return self.cache / "bad_files.json"

    @property
    def checkpoint(self) -> Path:
        """checkpoints/last.pt: the resume state of the search."""
        return self.root / "checkpoints" / "last.pt"

    @property
    def history(self) -> Path:
        """history.csv: one row per epoch."""
        return self.root / "history.csv"

    @property
    def search_dir(self) -> Path:
        """search/: what the search found and logged."""
        return self.root / "search"

    @property
    def result(self) -> Path:
        """search/result.pt: the SearchResult that derive reads."""
        return self.search_dir / "result.pt"

    @property
    def summary(self) -> Path:
        """search/summary.json."""
        return self.search_dir / "summary.json"

    @property
    def genotype(self) -> Path:
        """search/genotype.json."""
        return self.search_dir / "genotype.json"

    def log(self, name: str) -> Path:
        """search/<name>.csv for one of SEARCH_LOGS."""
        if name not in SEARCH_LOGS:
            raise KeyError(f"unknown search log '{name}'")
        return self.search_dir / f"{name}.csv"

    @property
    def plots(self) -> Path:
        """plots/."""
        return self.root / "plots"

    def plot(self, name: str) -> Path:
        """plots/<name>.png."""
        return self.plots / f"{name}.png"

    @property
    def tensorboard(self) -> Path:
        """tensorboard/: the search's TensorBoard event files (when logging is on)."""
        return self.root / "tensorboard"

    @property
    def child(self) -> Path:
        """derived/child.pt: the plain child network and its weights (the torch eager format's file)."""
        return self.root / "derived" / FORMATS["torch"].file_name

    @property
    def child_genotype(self) -> Path:
        """derived/genotype.json."""
        return self.root / "derived" / "genotype.json"

    def stamp(self, stage: str) -> Path:
        """stages/<stage>.json: what a stage last ran on (for skipping)."""
        return self.root / "stages" / f"{stage}.json"
