"""The pipeline stages and their chaining. Each stage reads only the files of the stage before it,
and is skipped when its recipe settings and input files are unchanged (unless forced).

A stage writes a stamp `runs/<name>/stages/<stage>.json` after it succeeds,
holding the hash of the recipe settings it used and of its input files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dha_pipeline.data.source import parse_spec
from dha_pipeline.errors import DhaError
from dha_pipeline.fileio import sha256_file, sha256_json, write_json
from dha_pipeline.progress import console
from dha_pipeline.recipe import SEARCH_SECTIONS, Recipe, load_recipe, save_resolved

CACHE_DIR = "cache"
STAGE_ORDER = ("prepare", "search", "derive", "export", "evaluate")
RESOLVED_RECIPE = "recipe.resolved.toml"


@dataclass
class StageReport:
    """What a stage did, for the CLI's summary table."""

    stage: str
    skipped: bool
    summary: dict[str, Any] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)


def resolve_recipe(target: str | Path, overrides: list[str] | None = None) -> Recipe:
    """A recipe from a .toml file, or from a run directory's resolved recipe."""
    target = Path(target)
    if target.is_dir():
        resolved = target / RESOLVED_RECIPE
        if not resolved.is_file():
            raise DhaError(f"'{target}' is not a run directory (no {RESOLVED_RECIPE})",
                           "pass a recipe .toml or a runs/<name>/ directory")
        return load_recipe(resolved, [f"runs_dir={json.dumps(str(target.parent))}", *(overrides or [])])
    return load_recipe(target, overrides)


def _source_stat(spec: str) -> str:
    """A cheap fingerprint of the dataset's files (names, sizes, mtimes) to notice changed data."""
    kind, path = parse_spec(spec)
    if kind == "digits":
        return "digits"
    root = Path(path)
    if root.is_file():
        stat = root.stat()
        return sha256_json([root.name, stat.st_size, stat.st_mtime_ns])
    entries = sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                     for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    return sha256_json(entries)


class Stamp:
    """Skip logic for one stage of one run."""

    def __init__(self, recipe: Recipe, stage: str, settings: str, inputs: dict[str, str],
                 outputs: list[Path]) -> None:
        self.path = recipe.run_dir / "stages" / f"{stage}.json"
        self.record = {"settings": settings, "inputs": inputs, "outputs": [str(p) for p in outputs]}

    def is_current(self) -> bool:
        """Same settings and inputs as the last successful run, and its outputs still exist?"""
        if not self.path.is_file():
            return False
        try:
            stored = json.loads(self.path.read_text())
        except json.JSONDecodeError:
            return False
        return stored == self.record and all(Path(p).exists() for p in self.record["outputs"])

    def write(self) -> None:
        """Record a successful run."""
        write_json(self.path, self.record)


def _file_hashes(*paths: Path) -> dict[str, str]:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DhaError(f"'{missing[0]}' does not exist", "run the stage before this one first (or `dha run`)")
    return {str(p): sha256_file(p) for p in paths}


def _staged(recipe: Recipe, stage: str, settings: str, inputs: dict[str, str], outputs: list[Path],
            force: bool, work: Callable[[], dict[str, Any]], skipped_summary: Callable[[], dict[str, Any]]
            ) -> StageReport:
    stamp = Stamp(recipe, stage, settings, inputs, outputs)
    save_resolved(recipe, recipe.run_dir)
    if not force and stamp.is_current():
        return StageReport(stage, True, skipped_summary(), outputs)
    summary = work()
    stamp.write()
    return StageReport(stage, False, summary, outputs)


def prepare(recipe: Recipe, *, force: bool = False) -> StageReport:
    """Build the verified dataset cache in runs/<name>/cache/."""
    from dha_pipeline.data.cache import MANIFEST, build_dataset, save_cache

    cache = recipe.run_dir / CACHE_DIR
    manifest = cache / MANIFEST

    def summary(m: dict[str, Any]) -> dict[str, Any]:
        counts = {split: sum(c) for split, c in m["counts"].items()}
        return {"dataset": m["dataset"], "classes": len(m["classes"]), **counts,
                "image": f"{m['image_size']}x{m['image_size']}x{m['channels']}",
                "bad files skipped": len(m["bad_files"]), "cache": str(cache)}

    def work() -> dict[str, Any]:
        data = build_dataset(recipe.data)
        save_cache(data, cache)
        bad_files = data.manifest["bad_files"]
        if bad_files:
            write_json(cache / "bad_files.json", bad_files)
            console.print(f"[yellow]warning:[/yellow] skipped {len(bad_files)} unreadable image(s); "
                          f"the list is in {cache / 'bad_files.json'}", highlight=False)
        return summary(data.manifest)

    return _staged(recipe, "prepare", recipe.section_sha256("data"), {"source": _source_stat(recipe.data.dataset)},
                   [manifest], force, work, lambda: summary(json.loads(manifest.read_text())))


def search(recipe: Recipe, *, force: bool = False, resume: bool = False) -> StageReport:
    """The joint search/training from the cache; checkpoints, history, logs and plots in runs/<name>/."""
    from dha_pipeline.data.cache import MANIFEST, load_cache
    from dha_pipeline.search.loop import CHECKPOINT, run_search

    run_dir = recipe.run_dir
    checkpoint = run_dir / CHECKPOINT
    summary_path = run_dir / "search" / "summary.json"

    def summary(report: dict[str, Any]) -> dict[str, Any]:
        last = report["final"]
        genotype = report["genotype"]
        hyper = report["hyperparameters"]
        rows = {"mode": report["mode"], "components": ", ".join(report["components"]) or "none",
                "epochs": report["epochs"], "train loss": f"{last['train_loss']:.4f}",
                "val top-1": f"{100 * last['val_top1']:.2f}%",
                "final lr / wd": f"{hyper['lr']:.2e} / {hyper['weight_decay']:.1e}",
                "normal cell": ", ".join(f"{op}<-{i}" for op, i in genotype["normal"]),
                "reduce cell": ", ".join(f"{op}<-{i}" for op, i in genotype["reduce"]),
                "child params / MACs": f"{report['params']:,} / {report['macs']:,}",
                "seconds": f"{report['seconds']:.1f}"}
        if report["da_policy"]:
            top = list(report["da_policy"].items())[:3]
            rows["top policy pairs"] = ", ".join(f"{pair} {100 * p:.1f}%" for pair, p in top)
        return {**rows, "checkpoint": str(checkpoint)}

    def work() -> dict[str, Any]:
        outcome = run_search(recipe, load_cache(run_dir / CACHE_DIR), resume=resume)
        rows = summary(json.loads(summary_path.read_text()))
        if outcome.resumed_from:
            rows["resumed from"] = outcome.resumed_from
        return rows

    inputs = _file_hashes(run_dir / CACHE_DIR / MANIFEST)
    return _staged(recipe, "search", recipe.section_sha256(*SEARCH_SECTIONS), inputs, [checkpoint, summary_path],
                   force or resume, work, lambda: summary(json.loads(summary_path.read_text())))


def derive(recipe: Recipe, *, force: bool = False) -> StageReport:
    """The trained network as a plain child module in runs/<name>/derived/."""
    from dha_pipeline.derive import CHILD, derive_child, load_child
    from dha_pipeline.search.loop import CHECKPOINT

    child_path = recipe.run_dir / CHILD

    def summary(child: Any, gap: float | None) -> dict[str, Any]:
        return {"genotype": "normal " + ", ".join(f"{op}<-{i}" for op, i in child.config.genotype.normal),
                "layers x channels": f"{child.config.layers} x {child.config.init_channels}",
                **({"max |child - trained|": f"{gap:.1e}"} if gap is not None else {}), "child": str(child_path)}

    def work() -> dict[str, Any]:
        child, gap = derive_child(recipe.run_dir / CHECKPOINT, child_path)
        return summary(child, gap)

    return _staged(recipe, "derive", "", _file_hashes(recipe.run_dir / CHECKPOINT), [child_path], force, work,
                   lambda: summary(load_child(child_path), None))


def export(recipe: Recipe, *, force: bool = False) -> StageReport:
    """Parity-gated ONNX/TorchScript files with metadata in exports/<name>/."""
    from dha_pipeline.data.cache import MANIFEST, load_cache
    from dha_pipeline.derive import CHILD, load_child
    from dha_pipeline.export.exporter import FORMATS, check_formats, export_child

    formats = check_formats(recipe.export.formats)
    export_dir = recipe.export_dir
    outputs = [export_dir / FORMATS[f].filename for f in formats] + [export_dir / "metadata.json"]

    def summary(metadata: dict[str, Any]) -> dict[str, Any]:
        parity = metadata["parity"]
        return {"formats": ", ".join(formats), "params": f"{metadata['params']:,}", "MACs": f"{metadata['macs']:,}",
                "parity max |diff|": f"{parity['max_abs_diff']:.2e}",
                "parity top-1 agreement": f"{100 * parity['top1_agreement']:.2f}% of {parity['num_samples']}",
                "directory": str(export_dir)}

    def work() -> dict[str, Any]:
        result = export_child(load_child(recipe.run_dir / CHILD), recipe.name, load_cache(recipe.run_dir / CACHE_DIR),
                              recipe.export, formats, export_dir)
        return summary(result.metadata)

    inputs = _file_hashes(recipe.run_dir / CHILD, recipe.run_dir / CACHE_DIR / MANIFEST)
    return _staged(recipe, "export", recipe.section_sha256("name", "exports_dir", "export"), inputs, outputs, force,
                   work, lambda: summary(json.loads((export_dir / "metadata.json").read_text())))


def evaluate(recipe: Recipe, *, force: bool = False) -> StageReport:
    """onnxruntime evaluation of the exported model on the recipe's held-out split."""
    from dha_pipeline.evaluate import evaluate_model

    model = recipe.export_dir / "model.onnx"
    report_path = recipe.export_dir / "evaluation.json"

    def summary(report: dict[str, Any]) -> dict[str, Any]:
        return evaluation_summary(report, report_path)

    def work() -> dict[str, Any]:
        result = evaluate_model(model, dataset=recipe.data.dataset, split=recipe.evaluate.split,
                                batch_size=recipe.evaluate.batch_size, latency_runs=recipe.evaluate.latency_runs,
                                download=recipe.data.download)
        return summary(result.report)

    return _staged(recipe, "evaluate", recipe.section_sha256("data", "evaluate"), _file_hashes(model), [report_path],
                   force, work, lambda: summary(json.loads(report_path.read_text())))


def evaluation_summary(report: dict[str, Any], path: Path) -> dict[str, Any]:
    """Summary-table rows of an evaluation report."""
    latency = report["latency_ms"]
    return {"data": f"{report['dataset']} ({report['split']}, {report['num_samples']} images)",
            "backend": report["backend"], "top-1": f"{100 * report['top1']:.2f}%",
            "top-5": f"{100 * report['top5']:.2f}%",
            "latency b1 p50 / p90": f"{latency['batch1_p50']:.2f} / {latency['batch1_p90']:.2f} ms",
            "latency b32 p50": f"{latency['batch32_p50']:.2f} ms",
            "throughput": f"{report['throughput_ips']:.0f} img/s", "report": str(path)}


STAGES: dict[str, Callable[..., StageReport]] = {
    "prepare": prepare, "search": search, "derive": derive, "export": export, "evaluate": evaluate}


def run_all(recipe: Recipe, *, force: bool = False, resume: bool = False,
            on_stage: Callable[[StageReport], None] | None = None) -> list[StageReport]:
    """Chain every stage; each skips itself when its settings and input files are unchanged."""
    reports = []
    for name in STAGE_ORDER:
        kwargs: dict[str, Any] = {"force": force}
        if name == "search":
            kwargs["resume"] = resume
        report = STAGES[name](recipe, **kwargs)
        reports.append(report)
        if on_stage is not None:
            on_stage(report)
    return reports
