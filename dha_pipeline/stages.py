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
from dha_pipeline.distributed import barrier, is_main_process
from dha_pipeline.errors import DhaError
from dha_pipeline.fileio import sha256_file, sha256_json, write_json
from dha_pipeline.layout import RunLayout
from dha_pipeline.progress import console
from dha_pipeline.recipe import SEARCH_SECTIONS, Recipe, load_recipe, save_resolved

STAGE_ORDER = ("prepare", "search", "derive", "export", "evaluate")


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
        resolved = RunLayout.of(target.parent, "", target.name).resolved_recipe
        if not resolved.is_file():
            raise DhaError(f"'{target}' is not a run directory (no {resolved.name})",
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
        self.path = recipe.layout.stamp(stage)
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
    if not force and stamp.is_current():
        return StageReport(stage, True, skipped_summary(), outputs)
    if is_main_process():
        save_resolved(recipe)
    summary = work()
    if is_main_process():
        stamp.write()
    return StageReport(stage, False, summary, outputs)


def prepare(recipe: Recipe, *, force: bool = False) -> StageReport:
    """Build the verified dataset cache in runs/<name>/cache/ (refusing first, before reading anything, a
    recipe that the storage mode it names cannot train)."""
    from dha_pipeline.data.cache import build_dataset, save_cache
    from dha_pipeline.data.training import source_class

    layout = recipe.layout
    if recipe.data.storage != "auto":
        source_class(recipe.data.storage).check_recipe(recipe)

    def summary(m: dict[str, Any]) -> dict[str, Any]:
        counts = {split: sum(c) for split, c in m["counts"].items()}
        return {"dataset": m["dataset"], "classes": len(m["classes"]), **counts,
                "image": f"{m['image_size']}x{m['image_size']}x{m['channels']}",
                "bad files skipped": len(m["bad_files"]), "cache": str(layout.cache)}

    def work() -> dict[str, Any]:
        data = build_dataset(recipe.data)
        save_cache(data, layout.cache)
        bad_files = data.manifest["bad_files"]
        if bad_files:
            write_json(layout.bad_files, bad_files)
            console.print(f"[yellow]warning:[/yellow] skipped {len(bad_files)} unreadable image(s); "
                          f"the list is in {layout.bad_files}", highlight=False)
        return summary(data.manifest)

    return _staged(recipe, "prepare", recipe.section_sha256("data"), {"source": _source_stat(recipe.data.dataset)},
                   [layout.manifest], force, work, lambda: summary(json.loads(layout.manifest.read_text())))


def search(recipe: Recipe, *, force: bool = False, resume: bool = False) -> StageReport:
    """The joint search/training from the cache; the result, checkpoints, history, logs and plots in runs/<name>/."""
    from dha_pipeline.data.cache import load_cache
    from dha_pipeline.latency import prepared_table
    from dha_pipeline.progress import log_line
    from dha_pipeline.search.run import run_search
    from dha_pipeline.spaces.base import DataShape
    from dha_pipeline.spaces.registry import get_space

    layout = recipe.layout
    space = get_space(recipe.model.space)

    def summary(report: dict[str, Any]) -> dict[str, Any]:
        last = report["final"]
        hyper = report["hyperparameters"]
        schedule = hyper["schedule"]
        rows = {"space": report["space"], "mode": report["mode"],
                "components": ", ".join(report["components"]) or "none",
                "epochs": report["epochs"], "train loss": f"{last['train_loss']:.4f}",
                "val top-1": f"{100 * last['val_top1']:.2f}%",
                f"eta: base lr / wd ({'learned' if hyper['learned'] else 'fixed'})":
                    f"{hyper['lr']:.3g} / {hyper['weight_decay']:.3g}",
                "lr schedule": f"{schedule['kind']} to {schedule['lr_min']:g} over {schedule['epochs']} epochs, "
                               f"{schedule['warmup_epochs']} warm-up",
                **space.describe(space.genotype_from_dict(report["genotype"])),
                "child params / MACs": f"{report['params']:,} / {report['macs']:,}",
                **({"child predicted latency": f"{report['predicted_latency_ms']:.2f} ms (batch 1, onnxruntime)"}
                   if "predicted_latency_ms" in report else {}),
                "seconds": f"{report['seconds']:.1f}"}
        augment = hyper.get("augment")
        if augment:
            rows[f"augmented share p ({'learned' if augment['learned'] else 'paper form'})"] = \
                f"{augment['fraction']:.3f}"
        if report["da_policy"]:
            top = list(report["da_policy"].items())[:3]
            rows["top policy pairs"] = ", ".join(f"{pair} {100 * p:.1f}%" for pair, p in top)
        return {**rows, "result": str(layout.result)}

    def work() -> dict[str, Any]:
        data = load_cache(layout.cache, ("train", "val"))
        shape = DataShape(len(data.classes), data.channels, data.image_size)
        latency = prepared_table(recipe, space, shape) if recipe.search.max_latency_ms else None
        outcome = run_search(recipe, data, resume=resume, latency=latency)
        for warning in outcome.warnings:
            log_line(f"warning: {warning}")
        rows = summary(json.loads(layout.summary.read_text()))
        if outcome.resumed_from:
            rows["resumed from"] = outcome.resumed_from
        return rows

    inputs = _file_hashes(layout.manifest)
    return _staged(recipe, "search", recipe.section_sha256(*SEARCH_SECTIONS), inputs,
                   [layout.result, layout.checkpoint, layout.summary], force or resume, work,
                   lambda: summary(json.loads(layout.summary.read_text())))


def derive(recipe: Recipe, *, force: bool = False) -> StageReport:
    """The trained network as a plain child module in runs/<name>/derived/."""
    from dha_pipeline.derive import derive_child, load_child
    from dha_pipeline.spaces.registry import get_space

    layout = recipe.layout

    def summary(child: Any, gap: float | None) -> dict[str, Any]:
        space = get_space(child.space)
        return {"space": child.space, **space.describe(space.genotype_from_dict(child.info["genotype"])),
                **({"max |child - trained|": f"{gap:.1e}"} if gap is not None else {}), "child": str(layout.child)}

    def work() -> dict[str, Any]:
        child, gap = derive_child(layout.result, layout.child, layout.child_genotype)
        return summary(child, gap)

    return _staged(recipe, "derive", "", _file_hashes(layout.result), [layout.child], force, work,
                   lambda: summary(load_child(layout.child), None))


def export(recipe: Recipe, *, force: bool = False) -> StageReport:
    """Parity-gated model files with metadata in exports/<name>/ (and the int8 model, accuracy-gated, when
    export.int8)."""
    from dha_pipeline.data.batches import spread_images
    from dha_pipeline.data.cache import load_cache
    from dha_pipeline.derive import load_child
    from dha_pipeline.export.exporter import INT8, Int8Inputs, check_formats, export_child, parity_images
    from dha_pipeline.export.int8 import FEW_CALIBRATION_IMAGES

    formats = check_formats(recipe.export.formats)
    layout = recipe.layout
    exports = layout.exports
    written = formats + ([INT8] if recipe.export.int8 else [])
    outputs = [exports.model(f) for f in written] + [exports.metadata]

    def summary(metadata: dict[str, Any]) -> dict[str, Any]:
        parity = metadata["parity"]
        rows = {"formats": ", ".join(written), "params": f"{metadata['params']:,}", "MACs": f"{metadata['macs']:,}",
                "parity max |diff|": f"{parity['max_abs_diff']:.2e}",
                "parity top-1 agreement": f"{100 * parity['top1_agreement']:.2f}% of {parity['num_samples']}"}
        int8 = metadata.get("int8")
        if int8:
            rows["int8 val top-1 (fp32)"] = (f"{100 * int8['int8_top1']:.2f}% ({100 * int8['fp32_top1']:.2f}%), "
                                            f"drop {int8['drop_points']:.2f} points of {int8['max_drop_points']:g} "
                                            f"allowed, {int8['num_samples']} images")
        return {**rows, "directory": str(exports.root)}

    def work() -> dict[str, Any]:
        count = recipe.export.parity_samples
        skip_bad = recipe.data.skip_bad
        prepared = load_cache(layout.cache, ("val",), skip_bad=skip_bad)
        val = prepared.sources["val"]
        needs_train = recipe.export.int8 or len(val) < count
        train = load_cache(layout.cache, ("train",), skip_bad=skip_bad).sources["train"] if needs_train else None
        images, images_source = parity_images(val, train, count)
        int8 = None
        if recipe.export.int8:
            assert train is not None
            calibration = spread_images(train, recipe.export.int8_calibration_images)
            if len(calibration) < FEW_CALIBRATION_IMAGES:
                console.print(f"[yellow]warning:[/yellow] the int8 model is calibrated on only {len(calibration)} "
                              f"training images (under {FEW_CALIBRATION_IMAGES}): its activation ranges may be "
                              "poorly estimated; raise export.int8_calibration_images if the data has more",
                              highlight=False)
            int8 = Int8Inputs(calibration, val)
        counts = {split: sum(c) for split, c in prepared.manifest["counts"].items()}
        result = export_child(load_child(layout.child), recipe.name, images, images_source, recipe.export, formats,
                              exports, int8, counts, layout.child)
        return summary(result.metadata)

    inputs = _file_hashes(layout.child, layout.manifest)
    return _staged(recipe, "export", recipe.section_sha256("name", "exports_dir", "export"), inputs, outputs, force,
                   work, lambda: summary(json.loads(exports.metadata.read_text())))


def evaluate(recipe: Recipe, *, force: bool = False) -> StageReport:
    """onnxruntime (or TorchScript) evaluation of the exported model on the prepared held-out split, and of
    the int8 model when there is one."""
    from dha_pipeline.data.cache import load_cache
    from dha_pipeline.evaluate import evaluate_model

    layout = recipe.layout
    exports = layout.exports
    int8 = [exports.model("onnx_int8")] if recipe.export.int8 else []
    models = [exports.primary_model(recipe.export.formats), *int8]
    reports = [exports.evaluation, *(exports.evaluation_of(model) for model in int8)]
    split = recipe.evaluate.split

    def summary(evaluated: list[dict[str, Any]]) -> dict[str, Any]:
        rows = evaluation_summary(evaluated[0], exports.evaluation)
        for report, path in zip(evaluated[1:], reports[1:], strict=True):
            rows["int8 top-1"] = f"{100 * report['top1']:.2f}%"
            rows["int8 latency b1 p50"] = f"{report['latency_ms']['batch1_p50']:.2f} ms"
            rows["int8 report"] = str(path)
        return rows

    def work() -> dict[str, Any]:
        data = load_cache(layout.cache, (split,), skip_bad=recipe.data.skip_bad)
        source = data.sources[split]
        evaluated = [evaluate_model(model, source, dataset=data.manifest["dataset"], split=split, classes=data.classes,
                                    batch_size=recipe.evaluate.batch_size, latency_runs=recipe.evaluate.latency_runs,
                                    out=report).report for model, report in zip(models, reports, strict=True)]
        return summary(evaluated)

    return _staged(recipe, "evaluate", recipe.section_sha256("evaluate"), _file_hashes(*models, layout.manifest),
                   reports, force, work, lambda: summary([json.loads(path.read_text()) for path in reports]))


def evaluation_summary(report: dict[str, Any], path: Path) -> dict[str, Any]:
    """Summary-table rows of an evaluation report."""
    latency = report["latency_ms"]
    return {"data": f"{report['dataset']} ({report['split']}, {report['num_samples']} images)",
            "backend": report["backend"], "top-1": f"{100 * report['top1']:.2f}%",
            "top-5": f"{100 * report['top5']:.2f}%",
            "latency b1 p50 / p90": f"{latency['batch1_p50']:.2f} / {latency['batch1_p90']:.2f} ms",
            "latency b32 p50": f"{latency['batch32_p50']:.2f} ms",
            "throughput": f"{report['throughput_ips']:.0f} img/s", "report": str(path)}


def prepared_shape(recipe: Recipe) -> Any:
    """The DataShape of the prepared cache (classes, channels, side), after `prepare`."""
    from dha_pipeline.spaces.base import DataShape

    path = recipe.layout.manifest
    if not path.is_file():
        raise DhaError(f"'{path}' does not exist", "run `dha prepare RECIPE` first")
    manifest = json.loads(path.read_text())
    return DataShape(len(manifest["classes"]), int(manifest["channels"]), int(manifest["image_size"]))


def profile_latency(recipe: Recipe) -> StageReport:
    """Measure every block of the recipe's supernet the latency table lacks (after `prepare`), and predict
    the latency of the space's default known network from it."""
    from dha_pipeline.latency import LatencyTable, backbone_signature, complete_table, table_path
    from dha_pipeline.spaces.registry import get_space

    space, shape, model = get_space(recipe.model.space), prepared_shape(recipe), recipe.model
    search = recipe.search
    table = LatencyTable(table_path(search, recipe.runs_dir), search.latency_threads, search.latency_runs)
    blocks = space.latency_blocks(model, shape, None)
    calibrated = backbone_signature(blocks) in table.scales
    measured = complete_table(table, space, model, shape, blocks)
    known = space.known_genotype(space.default_genotype, model)
    predicted = table.predict(space.latency_blocks(model, shape, known))
    return StageReport("profile-latency", measured == 0 and calibrated, {
        "machine": table.machine, "onnxruntime threads": search.latency_threads,
        "blocks of this supernet": len({block.key for block in blocks}), "newly measured": measured,
        "calibration factor (whole / blocks)": f"{table.scales[backbone_signature(blocks)]:.3f}",
        f"predicted batch-1 latency of {space.default_genotype}": f"{predicted:.3f} ms",
        "table": str(table.path)}, [table.path])


STAGES: dict[str, Callable[..., StageReport]] = {
    "prepare": prepare, "search": search, "derive": derive, "export": export, "evaluate": evaluate}
SHARED_STAGES = ("search",)  # what every rank runs under torchrun; rank 0 alone runs the others


def run_all(recipe: Recipe, *, force: bool = False, resume: bool = False,
            on_stage: Callable[[StageReport], None] | None = None) -> list[StageReport]:
    """Chain every stage; each skips itself when its settings and input files are unchanged.

    Under torchrun every rank trains (search); rank 0 alone prepares the cache (the others wait for it)
    and derives, exports and evaluates. The reports are this rank's.
    """
    reports = []
    for name in STAGE_ORDER:
        if name in SHARED_STAGES or is_main_process():
            kwargs: dict[str, Any] = {"force": force}
            if name == "search":
                kwargs["resume"] = resume
            report = STAGES[name](recipe, **kwargs)
            reports.append(report)
            if on_stage is not None:
                on_stage(report)
        if name == "prepare":
            barrier()  # the other ranks read the cache rank 0 just wrote (nothing for one process)
    return reports
