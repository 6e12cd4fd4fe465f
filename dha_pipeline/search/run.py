"""The search stage's work: run (or continue) the loop, then leave what it found (docs/ARCHITECTURE.md).

After training, rank 0 writes the SearchResult derive reads, search/genotype.json, search/summary.json
and the plots; under several processes the ranks' fingerprints are compared first. What the user should
hear about (ranks that disagree, training files skipped) comes back as warnings in the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dha_pipeline.data.cache import PreparedData
from dha_pipeline.distributed import barrier, gather_objects, is_main_process
from dha_pipeline.fileio import write_json
from dha_pipeline.latency import LatencyTable
from dha_pipeline.recipe import SEARCH_SECTIONS, Recipe
from dha_pipeline.search import observe
from dha_pipeline.search.loop import SearchRun
from dha_pipeline.search.replicas import compare, fingerprints
from dha_pipeline.search.result import SearchResult
from dha_pipeline.spaces.base import Genotype


@dataclass
class SearchOutcome:
    """What a finished run reports."""

    history: list[dict[str, Any]]
    genotype: Genotype
    params: int
    macs: int
    seconds: float
    checkpoint: Path
    resumed_from: str | None
    plots: list[Path]
    warnings: list[str] = field(default_factory=list)


def search_result(run: SearchRun) -> SearchResult:
    """What derive reads: the trained network, the architecture weights, and what was learned."""
    data, arch = run.data, run.arch
    return SearchResult(
        name=run.recipe.name, space=run.space.name, kind="network" if arch.fixed else "supernet",
        network=run.network.config.to_dict(),
        state_dict={k: v.detach().cpu() for k, v in run.network.state_dict().items()},
        arch_weights=None if arch.fixed else SearchResult.pack_weights(arch.weights()),
        genotype=run.arch.genotype().to_dict(), hyperparameters=run.hyperparameters(),
        da_policy=run.policy.top_choices(),
        base_augment=run.base_augment.to_dict(), components=sorted(run.components), mode=run.mode,
        epochs=run.epoch, final_val_top1=run.history[-1]["val_top1"] if run.history else None,
        classes=data.classes, mean=data.mean, std=data.std, channels=data.channels, image_size=data.image_size,
        data={"dataset": data.manifest["dataset"], "split": data.manifest["split"], "eval_crop": data.eval_crop},
        recipe_sha256=run.settings_sha256)


def run_search(recipe: Recipe, data: PreparedData, *, resume: bool = False,
               latency: LatencyTable | None = None) -> SearchOutcome:
    """Run (or continue) the recipe's search/training; writes only under runs/<name>/. `latency` is the
    latency table a latency budget or target is tested on."""
    run = SearchRun(recipe, data, latency)
    resumed_from = None
    if resume and run.restore():
        resumed_from = f"epoch {run.epoch + 1}, step {run.step_in_epoch}"
    run.run()
    weight_average = run.finish_average()
    budget = run.budget_report()
    genotype = run.arch.genotype()
    cost = run.cost(genotype)
    params, macs, latency_ms = cost
    target = run.arch.target_report(cost)
    layout = run.layout
    replicas = compare(gather_objects(fingerprints(run.replica_parts()))) if run.world > 1 else None
    bad_files = sorted({path for paths in gather_objects(run.source.bad_files) for path in paths})
    plots = observe.write_plots(layout, run.history, run.logs, run.policy, run.space,
                                run.space.decision_points(recipe.model), genotype.to_dict())
    warnings = []  # rank 0's: the other processes print nothing but errors
    if is_main_process() and replicas is not None and not replicas["shared_parts_agree"]:
        warnings.append(f"the {run.world} processes ended with different {', '.join(replicas['disagree'])}; rank 0's "
                        f"model is kept (see 'replicas' in {layout.summary})")
    if is_main_process() and bad_files:
        warnings.append(f"{len(bad_files)} unreadable training image(s) were skipped (data.skip_bad), first "
                        f"'{bad_files[0]}'; all are listed under 'bad_files' in {layout.summary}")
    if is_main_process():
        result = search_result(run)
        result.save(layout.result)
        write_json(layout.genotype, result.genotype)
        write_json(layout.summary,
                   {"space": result.space, "mode": run.mode, "components": result.components, "epochs": run.epoch,
                    "phase": run.arch.phase.value, "params": params, "macs": macs,
                    **({} if latency_ms is None else {"predicted_latency_ms": latency_ms}),
                    **({} if target is None else {"target": target}),
                    **({} if replicas is None else {"replicas": replicas}),
                    **({"bad_files": bad_files} if bad_files else {}),
                    **({} if budget is None else {"budget": budget}),
                    **({} if weight_average is None else {"weight_average": weight_average}),
                    "genotype": result.genotype,
                    "hyperparameters": result.hyperparameters, "da_policy": result.da_policy,
                    "final": run.history[-1] if run.history else {}, "seconds": run.clock.elapsed})
    if run.tensorboard is not None:
        metrics = {"val_top1": run.history[-1]["val_top1"], "params": params, "macs": macs} if run.history else {}
        run.tensorboard.finish(plots, {key: value for key, value in recipe.to_dict().items()
                                       if key in SEARCH_SECTIONS}, metrics, run.epoch)
    barrier()  # the other ranks read what rank 0 just wrote
    return SearchOutcome(run.history, genotype, params, macs, run.clock.elapsed, layout.checkpoint, resumed_from,
                         plots, warnings)
