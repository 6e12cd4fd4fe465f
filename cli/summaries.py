"""The rows of each stage's summary table (and `dha evaluate`'s, `dha run`'s, the smoke run's), formatted
from the numbers the stages report.

Stages return data (dha_pipeline/stages.py); this is where their numbers become text for people:
percentages, thousands separators, milliseconds. (The benchmark and predict tables are built by their
commands in cli/main.py, from their rows.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Rows = dict[str, str]


def _percent(share: float) -> str:
    return f"{100 * share:.2f}%"


def prepare_rows(data: dict[str, Any]) -> Rows:
    """The cache: dataset, classes, images per split, image shape, skipped files."""
    manifest = data["manifest"]
    counts = {split: str(sum(per_class)) for split, per_class in manifest["counts"].items()}
    side = manifest["image_size"]
    return {"dataset": manifest["dataset"], "classes": str(len(manifest["classes"])), **counts,
            "image": f"{side}x{side}x{manifest['channels']}", "bad files skipped": str(len(manifest["bad_files"])),
            "cache": str(data["cache"])}


def search_rows(data: dict[str, Any]) -> Rows:
    """What the search found and how training ended (search/summary.json)."""
    last, hyper = data["final"], data["hyperparameters"]
    schedule = hyper["schedule"]
    rows = {"space": data["space"], "mode": data["mode"], "components": ", ".join(data["components"]) or "none",
            "epochs": str(data["epochs"]), "train loss": f"{last['train_loss']:.4f}",
            "val top-1": _percent(last["val_top1"]),
            f"eta: base lr / wd ({'learned' if hyper['learned'] else 'fixed'})":
                f"{hyper['lr']:.3g} / {hyper['weight_decay']:.3g}",
            "lr schedule": f"{schedule['kind']} to {schedule['lr_min']:g} over {schedule['epochs']} epochs, "
                           f"{schedule['warmup_epochs']} warm-up",
            **data["network"], "child params / MACs": f"{data['params']:,} / {data['macs']:,}"}
    if "predicted_latency_ms" in data:
        rows["child predicted latency"] = f"{data['predicted_latency_ms']:.2f} ms (batch 1, onnxruntime)"
    if "target" in data:
        target = data["target"]
        child = "not measured" if target["child"] is None else f"{target['child']:,.6g} ({target['ratio']:.1%})"
        rows[f"{target['metric']} target"] = (f"child {child} of {target['target']:,.6g}, band from "
                                              f"{target['low']:,.6g}: {'in band' if target['in_band'] else 'OUT'}")
    rows["seconds"] = f"{data['seconds']:.1f}"
    derived = hyper.get("lr_from_batch")
    if derived and derived["factor"] != 1.0:
        rows["starting lr (linear rule)"] = (f"{derived['lr']:.4g} = {derived['stated_lr']:.4g} x "
                                             f"{derived['global_batch']} / {derived['stated_for_batch']}")
    budget = data.get("budget")
    if budget:
        where = (f"stopped on time in epoch {budget['stopped_in_epoch']} after step {budget['stopped_after_step']} "
                 f"of {budget['steps_per_epoch']}" if budget["stopped_in_epoch"] else
                 "stopped between epochs" if budget["spent"] else "not reached")
        rows["minutes budget"] = f"{budget['minutes']:g} min: {budget['trained_seconds']:.1f} s trained, {where}"
    average = data.get("weight_average")
    if average:
        rows[f"weight average ({average['ema_epochs']:g} epochs)"] = (
            "not started (no training phase)" if average["val_top1"] is None else
            f"val {_percent(average['val_top1'])} vs last weights {_percent(average['last_val_top1'])}: "
            f"{'kept' if average['used'] else 'not kept'}")
    augment = hyper.get("augment")
    if augment:
        rows[f"augmented share p ({'learned' if augment['learned'] else 'paper form'})"] = f"{augment['fraction']:.3f}"
    if data["da_policy"]:
        top = list(data["da_policy"].items())[:3]
        rows["top policy pairs"] = ", ".join(f"{pair} {100 * p:.1f}%" for pair, p in top)
    rows["result"] = str(data["result"])
    if data["resumed_from"]:
        rows["resumed from"] = data["resumed_from"]
    return rows


def derive_rows(data: dict[str, Any]) -> Rows:
    """The child: its space and network, and how exactly it computes what the trained network did."""
    gap = {} if data["gap"] is None else {"max |child - trained|": f"{data['gap']:.1e}"}
    return {"space": data["space"], **data["network"], **gap, "child": str(data["child"])}


def export_rows(data: dict[str, Any]) -> Rows:
    """The formats written, the child's size, the parity gate and (with int8) its accuracy gate."""
    metadata = data["metadata"]
    parity = metadata["parity"]
    rows = {"formats": ", ".join(data["formats"]), "params": f"{metadata['params']:,}",
            "MACs": f"{metadata['macs']:,}", "parity max |diff|": f"{parity['max_abs_diff']:.2e}",
            "parity top-1 agreement": f"{_percent(parity['top1_agreement'])} of {parity['num_samples']}"}
    int8 = metadata.get("int8")
    if int8:
        rows["int8 val top-1 (fp32)"] = (f"{_percent(int8['int8_top1'])} ({_percent(int8['fp32_top1'])}), drop "
                                        f"{int8['drop_points']:.2f} points of {int8['max_drop_points']:g} allowed, "
                                        f"{int8['num_samples']} images")
    return {**rows, "directory": str(data["directory"])}


def evaluation_rows(report: dict[str, Any], path: Any) -> Rows:
    """One evaluation report: data, backend, accuracy, latency, throughput."""
    latency = report["latency_ms"]
    return {"data": f"{report['dataset']} ({report['split']}, {report['num_samples']} images)",
            "backend": report["backend"], "top-1": _percent(report["top1"]),
            **({"top-5": _percent(report["top5"])} if "top5" in report else {}),
            "balanced accuracy / macro-F1": f"{_percent(report['balanced_accuracy'])} / "
                                            f"{_percent(report['macro_f1'])}",
            "latency b1 p50 / p90": f"{latency['batch1_p50']:.2f} / {latency['batch1_p90']:.2f} ms",
            "latency b32 p50": f"{latency['batch32_p50']:.2f} ms",
            "throughput": f"{report['throughput_ips']:.0f} img/s", "report": str(path)}


def evaluate_rows(data: dict[str, Any]) -> Rows:
    """The primary model's evaluation, and the int8 model's beside it."""
    primary, *others = data["evaluations"]
    rows = evaluation_rows(primary["report"], primary["path"])
    for other in others:
        report = other["report"]
        rows["int8 top-1"] = _percent(report["top1"])
        rows["int8 latency b1 p50"] = f"{report['latency_ms']['batch1_p50']:.2f} ms"
        rows["int8 report"] = str(other["path"])
    return rows


def profile_latency_rows(data: dict[str, Any]) -> Rows:
    """The latency table: where it was measured, what it holds, what it predicts."""
    return {"machine": data["machine"], "onnxruntime threads": str(data["threads"]),
            "blocks of this supernet": str(data["blocks"]), "newly measured": str(data["measured"]),
            "calibration factor (whole / blocks)": f"{data['factor']:.3f}",
            f"predicted batch-1 latency of {data['default_genotype']}": f"{data['predicted_ms']:.3f} ms",
            "table": str(data["path"])}


def smoke_rows(data: dict[str, Any]) -> Rows:
    """The smoke run's child at full size: classes, input, parameters, MACs, predicted latency."""
    channels, size = data["channels"], data["image_size"]
    latency = ("n/a (the space has no latency table)" if data["predicted_latency_ms"] is None else
               f"{data['predicted_latency_ms']:.2f} ms (batch 1, {data['latency_threads']} thread(s))")
    return {"space": data["space"], "classes": str(data["classes"]), "input": f"{channels}x{size}x{size}",
            "child params": f"{data['params']:,}", "child MACs": f"{data['macs']:,}", "predicted latency": latency}


def run_rows(reports: list[Any], exports: Any) -> Rows:
    """`dha run`: each stage done or skipped, the test top-1 of the primary model, the export folder."""
    rows = {report.stage: "skipped (unchanged)" if report.skipped else "done" for report in reports}
    primary = reports[-1].data["evaluations"][0]["report"]
    return {**rows, f"{primary['split']} top-1": _percent(primary["top1"]), "exports": str(exports)}


STAGE_ROWS: dict[str, Callable[[dict[str, Any]], Rows]] = {
    "prepare": prepare_rows, "search": search_rows, "derive": derive_rows, "export": export_rows,
    "evaluate": evaluate_rows, "profile-latency": profile_latency_rows}
"""Stage name -> the rows of its summary table."""
