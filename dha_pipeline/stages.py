"""The pipeline stages and their chaining. Each stage reads the files of the stages before it (see
docs/ARCHITECTURE.md for which), and is skipped when its recipe settings and input files are unchanged
(unless forced).

A stage writes a stamp `runs/<name>/stages/<stage>.json` after it succeeds, holding the hash of the
recipe settings it used and of its input files. A stage returns data, never display text: the numbers
and names of what it made (mostly the very records it wrote) and the warnings the user should see;
`cli/` formats and prints them.
"""

from __future__ import annotations

import dataclasses
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
from dha_pipeline.recipe import SEARCH_SECTIONS, Recipe, load_recipe, save_resolved
from dha_pipeline.shipped import is_bare_name, shipped_recipe
from dha_pipeline.spaces.base import DataShape

STAGE_ORDER = ("prepare", "search", "derive", "export", "evaluate")


@dataclass
class StageReport:
    """What a stage did: its data (numbers and names, for the CLI's summary table) and its warnings."""

    stage: str
    skipped: bool
    data: dict[str, Any] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def resolve_recipe(target: str | Path, overrides: list[str] | None = None) -> Recipe:
    """A recipe from a .toml file, a shipped recipe's bare name (`imagenet_mobilenet`), or a run directory's
    resolved recipe."""
    if is_bare_name(target):
        target = shipped_recipe(str(target))
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


Work = Callable[[list[str]], dict[str, Any]]
"""A stage's work: does it, appends warnings to the list given, returns its data."""


CLAIMING_STAGES = ("prepare", "search")
"""The stages whose outputs are what a run is: redoing one with other settings would replace another run."""


def refuse_other_run(recipe: Recipe) -> None:
    """One user error when runs/<name>/ holds a run made with other training settings (SEARCH_SECTIONS): a
    second run must not silently replace the first. Export and evaluation settings may change freely, and an
    attempt that failed before prepare or search finished (no stamp, no checkpoint) protects nothing."""
    layout = recipe.layout
    resolved = layout.resolved_recipe
    made = any(layout.stamp(stage).is_file() for stage in CLAIMING_STAGES) or layout.checkpoint.is_file()
    if not resolved.is_file() or not made:
        return  # nothing to protect: a first attempt that failed before making anything
    try:
        existing = load_recipe(resolved)
    except DhaError:
        return  # an unreadable record protects nothing; the stage rewrites it
    changed = [section for section in SEARCH_SECTIONS
               if existing.section_sha256(section) != recipe.section_sha256(section)]
    if changed:
        raise DhaError(f"run '{recipe.name}' already exists in '{resolved.parent}' with other settings "
                       f"({', '.join(changed)})", "keep both with `dha run --new-name` (a numbered name) or --set "
                                                  "name=OTHER, or pass --force to replace it")


def fresh_name(recipe: Recipe) -> Recipe:
    """The recipe under the first free numbered name: <name>-2, <name>-3, ... (the name itself when free)."""
    runs_dir, name, number = Path(recipe.runs_dir), recipe.name, 2
    while (runs_dir / name).exists():
        name, number = f"{recipe.name}-{number}", number + 1
    return dataclasses.replace(recipe, name=name)


def _staged(recipe: Recipe, stage: str, settings: str, inputs: dict[str, str], outputs: list[Path],
            force: bool, work: Work, current: Callable[[], dict[str, Any]]) -> StageReport:
    """Run `work` unless the stamp says its inputs and settings are unchanged (then `current` reads the data
    of the outputs already there)."""
    stamp = Stamp(recipe, stage, settings, inputs, outputs)
    if not force and stamp.is_current():
        return StageReport(stage, True, current(), outputs)
    if stage in CLAIMING_STAGES and not force:
        refuse_other_run(recipe)
    if is_main_process():
        save_resolved(recipe)
    warnings: list[str] = []
    data = work(warnings)
    if is_main_process():
        stamp.write()
    return StageReport(stage, False, data, outputs, warnings)


def _manifest(layout: RunLayout) -> dict[str, Any]:
    return json.loads(layout.manifest.read_text())


def prepare(recipe: Recipe, *, force: bool = False) -> StageReport:
    """Build the verified dataset cache in runs/<name>/cache/ (refusing first, before reading anything, a
    recipe that the storage mode it names cannot train). Data: the cache's `manifest` and its `cache` folder."""
    from dha_pipeline.data.cache import build_dataset, imbalance_warning, save_cache
    from dha_pipeline.data.training import source_class

    layout = recipe.layout
    if recipe.data.storage != "auto":
        source_class(recipe.data.storage).check_recipe(recipe)

    def work(warnings: list[str]) -> dict[str, Any]:
        data = build_dataset(recipe.data)
        save_cache(data, layout.cache)
        bad_files = data.manifest["bad_files"]
        if bad_files:
            write_json(layout.bad_files, bad_files)
            warnings.append(f"skipped {len(bad_files)} unreadable image(s); the list is in {layout.bad_files}")
        imbalance = imbalance_warning(data.manifest)
        if imbalance:
            warnings.append(imbalance)
        return {"manifest": data.manifest, "cache": layout.cache}

    return _staged(recipe, "prepare", recipe.section_sha256("data"), {"source": _source_stat(recipe.data.dataset)},
                   [layout.manifest], force, work, lambda: {"manifest": _manifest(layout), "cache": layout.cache})


def _network(space_name: str, genotype: dict[str, Any]) -> dict[str, str]:
    """The space's description rows of a genotype."""
    from dha_pipeline.spaces.registry import get_space

    space = get_space(space_name)
    return space.describe(space.genotype_from_dict(genotype))


def search(recipe: Recipe, *, force: bool = False, resume: bool = False) -> StageReport:
    """The joint search/training from the cache; the result, checkpoints, history, logs and plots in runs/<name>/.
    Data: search/summary.json, the network's description rows (`network`), the `result` file, and where a
    resumed run continued (`resumed_from`)."""
    from dha_pipeline.data.cache import load_cache
    from dha_pipeline.latency import prepared_table
    from dha_pipeline.search.run import run_search
    from dha_pipeline.spaces.registry import get_space

    layout = recipe.layout

    def current(resumed_from: str | None = None) -> dict[str, Any]:
        summary = json.loads(layout.summary.read_text())
        return {**summary, "network": _network(summary["space"], summary["genotype"]), "result": layout.result,
                "resumed_from": resumed_from}

    def work(warnings: list[str]) -> dict[str, Any]:
        data = load_cache(layout.cache, ("train", "val"))
        shape = DataShape(len(data.classes), data.channels, data.image_size)
        space = get_space(recipe.model.space)
        latency = prepared_table(recipe, space, shape) if recipe.search.needs_latency_table else None
        outcome = run_search(recipe, data, resume=resume, latency=latency)
        warnings += outcome.warnings
        return current(outcome.resumed_from)

    inputs = _file_hashes(layout.manifest)
    return _staged(recipe, "search", recipe.section_sha256(*SEARCH_SECTIONS), inputs,
                   [layout.result, layout.checkpoint, layout.summary], force or resume, work, current)


def derive(recipe: Recipe, *, force: bool = False) -> StageReport:
    """The trained network as a plain child module in runs/<name>/derived/. Data: the `space`, the network's
    description rows, the largest logit gap between child and trained network (`gap`, None when skipped), and
    the `child` file."""
    from dha_pipeline.derive import derive_child, load_child

    layout = recipe.layout

    def data(child: Any, gap: float | None) -> dict[str, Any]:
        return {"space": child.space, "network": _network(child.space, child.info["genotype"]), "gap": gap,
                "child": layout.child}

    def work(warnings: list[str]) -> dict[str, Any]:
        return data(*derive_child(layout.result, layout.child, layout.child_genotype))

    return _staged(recipe, "derive", "", _file_hashes(layout.result), [layout.child], force, work,
                   lambda: data(load_child(layout.child), None))


def export(recipe: Recipe, *, force: bool = False) -> StageReport:
    """Parity-gated model files with metadata in exports/<name>/ (and the int8 model, accuracy-gated, when
    export.int8). Data: the `formats` written, the export's `metadata` and its `directory`."""
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

    def data(metadata: dict[str, Any]) -> dict[str, Any]:
        return {"formats": written, "metadata": metadata, "directory": exports.root}

    def work(warnings: list[str]) -> dict[str, Any]:
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
                warnings.append(f"the int8 model is calibrated on only {len(calibration)} training images (under "
                                f"{FEW_CALIBRATION_IMAGES}): its activation ranges may be poorly estimated; raise "
                                "export.int8_calibration_images if the data has more")
            int8 = Int8Inputs(calibration, val)
        counts = {split: sum(c) for split, c in prepared.manifest["counts"].items()}
        result = export_child(load_child(layout.child), recipe.name, images, images_source, recipe.export, formats,
                              exports, int8, counts, layout.child)
        return data(result.metadata)

    inputs = _file_hashes(layout.child, layout.manifest)
    return _staged(recipe, "export", recipe.section_sha256("name", "exports_dir", "export"), inputs, outputs, force,
                   work, lambda: data(json.loads(exports.metadata.read_text())))


def evaluate(recipe: Recipe, *, force: bool = False) -> StageReport:
    """onnxruntime (or TorchScript) evaluation of the exported model on the prepared held-out split, and of
    the int8 model when there is one. Data: `evaluations`, one {"report", "path"} per model, the primary
    model's first."""
    from dha_pipeline.data.cache import load_cache
    from dha_pipeline.evaluate import evaluate_model

    layout = recipe.layout
    exports = layout.exports
    int8 = [exports.model("onnx_int8")] if recipe.export.int8 else []
    models = [exports.primary_model(recipe.export.formats), *int8]
    reports = [exports.evaluation, *(exports.evaluation_of(model) for model in int8)]
    split = recipe.evaluate.split

    def data(evaluated: list[dict[str, Any]]) -> dict[str, Any]:
        return {"evaluations": [{"report": report, "path": path} for report, path in zip(evaluated, reports,
                                                                                          strict=True)]}

    def work(warnings: list[str]) -> dict[str, Any]:
        prepared = load_cache(layout.cache, (split,), skip_bad=recipe.data.skip_bad)
        evaluations = [evaluate_model(model, prepared.sources[split], dataset=prepared.manifest["dataset"],
                                      split=split, classes=prepared.classes, batch_size=recipe.evaluate.batch_size,
                                      latency_runs=recipe.evaluate.latency_runs, out=report)
                       for model, report in zip(models, reports, strict=True)]
        warnings += [warning for evaluation in evaluations for warning in evaluation.warnings]
        return data([evaluation.report for evaluation in evaluations])

    return _staged(recipe, "evaluate", recipe.section_sha256("evaluate"), _file_hashes(*models, layout.manifest),
                   reports, force, work, lambda: data([json.loads(path.read_text()) for path in reports]))


def prepared_shape(recipe: Recipe) -> DataShape:
    """The DataShape of the prepared cache (classes, channels, side), after `prepare`."""
    path = recipe.layout.manifest
    if not path.is_file():
        raise DhaError(f"'{path}' does not exist", "run `dha prepare RECIPE` first")
    manifest = json.loads(path.read_text())
    return DataShape(len(manifest["classes"]), int(manifest["channels"]), int(manifest["image_size"]))


def profile_latency(recipe: Recipe) -> StageReport:
    """Measure every block of the recipe's supernet the latency table lacks (after `prepare`), and predict
    the latency of the space's default known network from it. Data: the table's `machine`, `threads` and
    `path`, the supernet's distinct `blocks`, how many were newly `measured`, the backbone's calibration
    `factor`, and the `predicted_ms` of the space's `default_genotype`."""
    from dha_pipeline.latency import LatencyTable, backbone_signature, complete_table, table_path
    from dha_pipeline.spaces.registry import get_space

    space, shape, model = get_space(recipe.model.space), prepared_shape(recipe), recipe.model
    search = recipe.search
    table = LatencyTable(table_path(search, recipe.runs_dir), search.latency_threads, search.latency_runs)
    blocks = space.latency_blocks(model, shape, None)
    calibrated = backbone_signature(blocks) in table.scales
    measured = complete_table(table, space, model, shape, blocks)
    known = space.known_genotype(space.default_genotype, model)
    return StageReport("profile-latency", measured == 0 and calibrated, {
        "machine": table.machine, "threads": search.latency_threads, "blocks": len({block.key for block in blocks}),
        "measured": measured, "factor": table.scales[backbone_signature(blocks)],
        "default_genotype": space.default_genotype,
        "predicted_ms": table.predict(space.latency_blocks(model, shape, known)), "path": table.path}, [table.path])


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
