"""MODEL_CARD.md: what the model is, how it was made, how well it does."""

from __future__ import annotations

from typing import Any


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _eta(hyper: dict[str, Any]) -> str:
    """eta (base lr, weight decay) as learned or fixed, with the schedule the base lr was multiplied by."""
    if not hyper:
        return "hyper-parameters: not recorded"
    how = "learned by hypergradient" if hyper.get("learned") else "fixed by the recipe"
    line = f"eta ({how}): base learning rate {hyper['lr']:.4g}, weight decay {hyper['weight_decay']:.4g}"
    schedule = hyper.get("schedule")
    if schedule:
        line += (f"; schedule: {schedule['warmup_epochs']} warm-up epochs, then {schedule['kind']} to "
                 f"{schedule['lr_min']:g} over {schedule['epochs']} epochs, momentum {schedule['momentum']}")
    return line


def _augmentation(metadata: dict[str, Any]) -> list[str]:
    """The training augmentation: base ops, and the learned policy with its augmented share p."""
    base = metadata.get("base_augment") or {}
    parts = [f"crop padding {base.get('crop_padding', 0)}", f"flip {'on' if base.get('hflip') else 'off'}",
             f"cutout {base.get('cutout', 0)}"]
    if base.get("trivial_augment"):
        parts.append("TrivialAugment Wide")
    lines = [f"- base augmentation: {', '.join(parts)}"]
    augment = (metadata.get("hyperparameters") or {}).get("augment")
    if augment:
        how = (f"learned by hypergradient on clean {augment['measured_on']} images" if augment["learned"]
               else "the paper's form: every sample")
        lines.append(f"- learned policy applied to a share p = {augment['fraction']:.3f} of each batch ({how})")
    return lines


def model_card(metadata: dict[str, Any], evaluation: dict[str, Any] | None) -> str:
    """Markdown model card from the model metadata and, when known, its evaluation."""
    spec = metadata["input"]
    hyper = metadata.get("hyperparameters") or {}
    lines = [
        f"# {metadata['name']}",
        "",
        f"Image classifier over {len(metadata['classes'])} classes, made by dha "
        f"(mode `{metadata['mode']}`, components {metadata['components'] or 'none'}).",
        "",
        "## Input",
        f"- {spec['channels']}-channel {spec['size']}x{spec['size']} images, {spec['layout']} {spec['dtype']}, "
        f"pixels / 255 then (x - mean) / std with mean {spec['mean']} and std {spec['std']}",
        f"- resize: {spec['resize']} (Pillow)",
        "",
        "## Network",
        f"- search space: {metadata['search_space']}; params {metadata['params']:,}; MACs {metadata['macs']:,}",
        f"- genotype: `{metadata['genotype']}`",
        f"- {_eta(hyper)}",
        *_augmentation(metadata),
        f"- trained on `{metadata['data']['dataset']}`",
        "",
        "## Export parity (onnxruntime / TorchScript vs torch)",
        f"- max |logit diff| {metadata['parity']['max_abs_diff']:.2e}, top-1 agreement "
        f"{_percent(metadata['parity']['top1_agreement'])} on {metadata['parity']['num_samples']} images",
    ]
    if evaluation is not None:
        latency = evaluation["latency_ms"]
        lines += ["", "## Evaluation",
                  f"- `{evaluation['dataset']}` split `{evaluation['split']}`, {evaluation['num_samples']} images, "
                  f"backend {evaluation['backend']}",
                  f"- top-1 {_percent(evaluation['top1'])}, top-5 {_percent(evaluation['top5'])}",
                  f"- latency batch 1 p50 {latency['batch1_p50']:.2f} ms, p90 {latency['batch1_p90']:.2f} ms; "
                  f"batch 32 p50 {latency['batch32_p50']:.2f} ms; {evaluation['throughput_ips']:.0f} img/s"]
    return "\n".join(lines) + "\n"
