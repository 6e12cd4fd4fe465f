"""MODEL_CARD.md: what the model is, how it was made, how well and how fast it does, and how to call it.

The card is rebuilt from the files of its export folder (metadata.json, the evaluation reports,
benchmark.csv, network.png) whenever one of them changes: by export, evaluate and benchmark.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from dha_pipeline.errors import DhaError
from dha_pipeline.fileio import write_text
from dha_pipeline.formats.registry import FORMATS, PRIMARY_ORDER
from dha_pipeline.layout import ExportLayout

TOP_POLICY_PAIRS = 5
SNIPPET_IMAGE = "image.png"
"""The image path the card's onnxruntime snippet opens."""
ONNX_FILE = FORMATS["onnx"].file_name
INT8_FILE = FORMATS["onnx_int8"].file_name


def human_count(value: float) -> str:
    """A count for people: 53082 -> '53.1 k', 2263296 -> '2.26 M'."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.3g}"


def percent(value: float | None) -> str:
    """A share as a percentage with one decimal, or 'n/a'."""
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _number(value: float) -> str:
    return f"{value:.3g}"


def onnx_snippet(metadata: dict[str, Any], model_file: str = ONNX_FILE, image: str = SNIPPET_IMAGE) -> str:
    """Ten-odd lines of plain onnxruntime + numpy + Pillow that classify `image` as `dha predict` does
    (the model's own resize or center crop, scaling and normalization)."""
    spec = metadata["input"]
    size, crop = int(spec["size"]), float(spec.get("crop", 1.0))
    mode = "RGB" if int(spec["channels"]) == 3 else "L"
    if crop >= 1.0:
        view = [f'image = Image.open("{image}").convert("{mode}").resize(({size}, {size}), Image.BILINEAR)']
    else:
        view = [f'image = Image.open("{image}").convert("{mode}")',
                f"scale = max(round({size} / {crop!r}), {size}) / min(image.size)  # shorter side to size / crop",
                f"image = image.resize((max({size}, round(image.width * scale)), max({size}, "
                f"round(image.height * scale))), Image.BILINEAR)",
                f"left, top = (image.width - {size}) // 2, (image.height - {size}) // 2",
                f"image = image.crop((left, top, left + {size}, top + {size}))  # the center {size}x{size}"]
    return "\n".join([
        "import json",
        "import numpy as np",
        "import onnxruntime as ort",
        "from PIL import Image",
        "",
        f'session = ort.InferenceSession("{model_file}", providers=["CPUExecutionProvider"])',
        'meta = json.loads(session.get_modelmeta().custom_metadata_map["dha_metadata"])',
        *view,
        'x = (np.atleast_3d(np.asarray(image, np.float32) / 255) - meta["input"]["mean"]) / meta["input"]["std"]',
        'logits = session.run(None, {"input": x.transpose(2, 0, 1)[None].astype(np.float32)})[0][0]',
        'print(meta["classes"][int(logits.argmax())])',
    ])


def _summary(metadata: dict[str, Any]) -> list[str]:
    classes = metadata["classes"]
    shown = ", ".join(classes[:10]) + (f", ... ({len(classes)} in all)" if len(classes) > 10 else "")
    counts = metadata["data"].get("images") or {}
    trained = f"{counts['train']:,} training images of " if "train" in counts else ""
    return [f"# {metadata['name']}", "",
            f"An image classifier over {len(classes)} classes ({shown}), searched and trained by dha "
            f"(mode `{metadata['mode']}`, searched: {', '.join(metadata['components']) or 'nothing'}) on "
            f"{trained}`{metadata['data']['dataset']}`. {human_count(metadata['params'])} parameters, "
            f"{human_count(metadata['macs'])} multiply-adds per image."]


def _at_a_glance(metadata: dict[str, Any], evaluations: dict[str, dict[str, Any] | None],
                 benchmark: list[dict[str, str]]) -> list[str]:
    int8 = metadata.get("int8")
    columns = ["fp32"] + (["int8"] if int8 else [])
    fp32_eval, int8_eval = evaluations.get("fp32"), evaluations.get("int8")
    rows = [["file", f"`{FORMATS[_primary(metadata)].file_name}`", f"`{INT8_FILE}`"]]
    if fp32_eval or int8_eval:
        split = (fp32_eval or int8_eval or {}).get("split", "test")
        rows.append([f"top-1 on the {split} split",
                     percent(fp32_eval["top1"]) if fp32_eval else "not evaluated",
                     percent(int8_eval["top1"]) if int8_eval else "not evaluated"])
    if int8:
        rows.append([f"top-1 on val ({int8['num_samples']} images, the int8 gate)", percent(int8["fp32_top1"]),
                     f"{percent(int8['int8_top1'])} ({0.0 - int8['drop_points']:+.1f} points)"])
    by_format = {row["format"]: row for row in benchmark}
    shown = {"batch1_p50_ms": lambda v: f"{v:.3g} ms", "batch32_images_per_s": lambda v: f"{v:,.0f} img/s"}
    for label, key in (("batch-1 latency, median", "batch1_p50_ms"), ("batch-32 throughput", "batch32_images_per_s")):
        values = [by_format.get(name, {}).get(key) for name in ("onnx", "onnx_int8")]
        if any(values):
            rows.append([label + " (dha benchmark)", *(shown[key](float(v)) if v else "n/a" for v in values)])
    lines = ["", "## At a glance", "", "| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row[:1 + len(columns)]) + " |" for row in rows]
    return lines


def _primary(metadata: dict[str, Any]) -> str:
    return next(fmt for fmt in PRIMARY_ORDER if fmt in metadata["parity"]["by_format"])


def _how_to_call(metadata: dict[str, Any]) -> list[str]:
    name = metadata["name"]
    if "onnx" not in metadata["parity"]["by_format"]:
        return ["", "## How to call it", "", "Export the ONNX format (`dha export RUN --format onnx`) to call it with "
                "`dha predict` or plain onnxruntime; the files here load with torch."]
    int8 = f", on `{ONNX_FILE}` or `{INT8_FILE}`" if metadata.get("int8") else ""
    return ["", "## How to call it", "",
            f"With dha (onnxruntime, numpy and Pillow only; files, folders and glob patterns){int8}:", "",
            "```bash", f"dha predict exports/{name}/{ONNX_FILE} photos/ 'more/*.jpg' --top-k 3 --json",
            "```", "", "With plain onnxruntime, numpy and Pillow, from this folder:", "",
            "```python", onnx_snippet(metadata), "```"]


def _input(metadata: dict[str, Any]) -> list[str]:
    spec = metadata["input"]
    crop = float(spec.get("crop", 1.0))
    view = (f"the whole image resized to {spec['size']}x{spec['size']}" if crop >= 1.0 else
            f"the shorter side resized to {round(spec['size'] / crop)}, then the center {spec['size']}x{spec['size']}")
    mean = ", ".join(f"{v:.3f}" for v in spec["mean"])
    std = ", ".join(f"{v:.3f}" for v in spec["std"])
    return ["", "## Input", "",
            f"- {spec['channels']}-channel images ({'RGB' if spec['channels'] == 3 else 'grayscale'}): {view} "
            f"({spec['resize']}, Pillow), pixels / 255, then (x - mean) / std with mean ({mean}) and std ({std})",
            f"- tensor `input`: {spec['layout']} {spec['dtype']}, any batch size; output `logits`, one row per image"]


def _network(metadata: dict[str, Any], picture: bool) -> list[str]:
    lines = ["", "## Network", ""]
    if picture:
        lines += ["![the chosen network](network.png)", ""]
    lines += [f"- search space `{metadata['search_space']}`; {human_count(metadata['params'])} parameters, "
              f"{human_count(metadata['macs'])} multiply-adds"]
    lines += [f"- {key}: {value}" for key, value in metadata.get("network", {}).items()]  # the space's rows
    return lines


def _training(metadata: dict[str, Any]) -> list[str]:
    hyper = metadata.get("hyperparameters") or {}
    lines = ["", "## How it was trained", ""]
    if hyper:
        how = "learned by hypergradient" if hyper.get("learned") else "fixed by the recipe"
        lines.append(f"- eta ({how}): base learning rate {_number(hyper['lr'])}, weight decay "
                     f"{_number(hyper['weight_decay'])}")
        derived = hyper.get("lr_from_batch")
        if derived and derived["factor"] != 1.0:
            lines.append(f"- starting learning rate {_number(derived['lr'])}: the recipe's "
                         f"{_number(derived['stated_lr'])} for a global batch of {derived['stated_for_batch']}, "
                         f"scaled linearly to {derived['global_batch']}")
        schedule = hyper.get("schedule")
        if schedule:
            warmup = f"{schedule['warmup_epochs']} warm-up epochs, then " if schedule["warmup_epochs"] else ""
            lines.append(f"- schedule: {warmup}{schedule['kind']} to {schedule['lr_min']:g} over "
                         f"{schedule['epochs']} epochs, SGD momentum {schedule['momentum']}")
    base = metadata.get("base_augment") or {}
    parts = [f"crop padding {base.get('crop_padding', 0)}", f"flip {'on' if base.get('hflip') else 'off'}",
             f"cutout {base.get('cutout', 0)}"] + (["TrivialAugment Wide"] if base.get("trivial_augment") else [])
    lines.append(f"- base augmentation: {', '.join(parts)}")
    augment = hyper.get("augment")
    if augment:
        how = (f"learned by hypergradient on clean {augment['measured_on']} images" if augment["learned"]
               else "the paper's form: every sample")
        lines.append(f"- the learned policy was applied to a share p = {augment['fraction']:.2f} of each batch ({how})")
    start = hyper.get("policy")
    if start:
        lines.append(f"- the policy started at {start['start']} and moved KL {start['kl_to_start']:.3f} nats from it")
    policy = list((metadata.get("da_policy") or {}).items())[:TOP_POLICY_PAIRS]
    if policy:
        pairs = any("+" in name for name, _ in policy)
        lines += ["", f"Top {'pairs' if pairs else 'ops'} of the learned augmentation policy:", "",
                  f"| {'pair of operations' if pairs else 'operation'} | probability |", "|---|---|"]
        lines += [f"| {pair.replace('+', ' then ')} | {percent(p)} |" for pair, p in policy]
    return lines


def _per_class(metadata: dict[str, Any], evaluations: dict[str, dict[str, Any] | None]) -> list[str]:
    present = {name: report for name, report in evaluations.items() if report}
    if not present:
        return ["", "## Accuracy per class", "", "Not evaluated yet: `dha evaluate exports/"
                f"{metadata['name']}/{ONNX_FILE}` fills this in."]
    lines = ["", "## Accuracy per class", "", "Top-1 per class, on the split named in each column.", "",
             "| class | " + " | ".join(f"{name} ({report['split']})" for name, report in present.items()) + " |",
             "|---|" + "---|" * len(present)]
    for name in metadata["classes"]:
        lines.append(f"| {name} | " + " | ".join(percent(report["per_class_top1"].get(name))
                                                 for report in present.values()) + " |")
    return lines


def _latency(benchmark: list[dict[str, str]], evaluations: dict[str, dict[str, Any] | None]) -> list[str]:
    lines = ["", "## Latency", ""]
    if benchmark:
        first = benchmark[0]
        threads = f"{first['threads']} thread" + ("s" if int(first["threads"]) != 1 else "")
        lines += [f"`dha benchmark` on {first['machine']}, {threads}, top-1 on the "
                  f"{first['split']} split ({first['num_samples']} images):", "",
                  "| format | file | size | provider | top-1 | batch 1 median | batch 1 p90 | batch 32 |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in benchmark:
            lines.append(f"| {row['label']} | `{row['file']}` | {float(row['size_mb']):.2f} MB | {row['provider']} | "
                         f"{percent(float(row['top1']))} | {float(row['batch1_p50_ms']):.3g} ms | "
                         f"{float(row['batch1_p90_ms']):.3g} ms | {float(row['batch32_images_per_s']):,.0f} img/s |")
        return lines
    report = evaluations.get("fp32")
    if report:
        latency = report["latency_ms"]
        return lines + [f"From `dha evaluate` ({report['backend']}, {report['provider']}): batch 1 median "
                        f"{latency['batch1_p50']:.3g} ms, p90 {latency['batch1_p90']:.3g} ms; batch 32 "
                        f"{report['throughput_ips']:,.0f} img/s. `dha benchmark` measures every format."]
    return lines + ["Not measured yet: `dha benchmark` measures every format."]


def _parity(metadata: dict[str, Any]) -> list[str]:
    parity = metadata["parity"]
    lines = ["", "## Export parity", "",
             f"Each file against the torch model on {parity['num_samples']} real images ({parity['images']}):", "",
             "| file | max logit difference | top-1 agreement |", "|---|---|---|"]
    for fmt, result in parity["by_format"].items():
        lines.append(f"| `{FORMATS[fmt].file_name}` | {result['max_abs_diff']:.1e} | "
                     f"{percent(result['top1_agreement'])} |")
    int8 = metadata.get("int8")
    if int8:
        lines.append(f"| `{INT8_FILE}` | {int8['parity']['max_abs_diff']:.1e} | "
                     f"{percent(int8['parity']['top1_agreement'])} |")
        lines += ["", f"int8: {int8['format']}, weights {int8['weights']}, activations {int8['activations']}, "
                      f"calibrated ({int8['calibration']}) on {int8['calibration_images']} training images; it agrees "
                      f"with fp32 on {percent(int8['agreement'])} of the val images and loses "
                      f"{int8['drop_points']:.2f} points of top-1 (limit {int8['max_drop_points']:g})."]
    return lines


def _limits(metadata: dict[str, Any], evaluations: dict[str, dict[str, Any] | None],
            benchmark: list[dict[str, str]]) -> list[str]:
    spec = metadata["input"]
    untested = []
    if not evaluations.get("fp32"):
        untested.append("accuracy on held-out test data (run `dha evaluate`)")
    if metadata.get("int8") and not evaluations.get("int8"):
        untested.append("the int8 model on the test split (it was checked on val at export)")
    if not benchmark:
        untested.append("speed of every format (run `dha benchmark`)")
    elif not any("CUDA" in row["provider"] for row in benchmark):
        untested.append("speed on a GPU (the benchmark ran on the CPU)")
    untested += ["images from other sources, cameras or conditions than the training data (distribution shift)",
                 "robustness to corrupted or adversarial inputs, and fairness across groups of subjects"]
    return ["", "## Intended use and limits", "",
            f"- Intended for: sorting images like those of `{metadata['data']['dataset']}` into its "
            f"{len(metadata['classes'])} classes. Every image gets one of these classes: there is no 'none of "
            "these' answer, so screen out-of-scope images before calling it.",
            f"- Input size: the model sees {spec['size']}x{spec['size']} pixels; detail finer than that is lost, "
            "and images very unlike the training images in size or framing were not tested.",
            "- Not tested: " + "; ".join(untested) + "."]


def _provenance(metadata: dict[str, Any]) -> list[str]:
    versions = ", ".join(f"{name} {version}" for name, version in metadata["versions"].items())
    return ["", "## Provenance", "", f"- recipe sha256 `{metadata['recipe_sha256']}`", f"- {versions}"]


def model_card(metadata: dict[str, Any], evaluations: dict[str, dict[str, Any] | None] | None = None,
               benchmark: list[dict[str, str]] | None = None, picture: bool = False) -> str:
    """Markdown model card from the model metadata, the evaluation reports of the fp32 and int8 ONNX
    models (keys 'fp32', 'int8'; None when absent; reports need only `split`, `top1` and `per_class_top1`
    beyond what the latency line reads), the benchmark rows, and whether network.png exists."""
    evaluations = evaluations or {}
    benchmark = benchmark or []
    lines = [*_summary(metadata), *_at_a_glance(metadata, evaluations, benchmark), *_how_to_call(metadata),
             *_input(metadata), *_network(metadata, picture), *_training(metadata),
             *_per_class(metadata, evaluations), *_latency(benchmark, evaluations), *_parity(metadata),
             *_limits(metadata, evaluations, benchmark), *_provenance(metadata)]
    return "\n".join(lines) + "\n"


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _benchmark_accuracy(benchmark: dict[str, Any] | None) -> dict[str, dict[str, Any] | None]:
    """The ONNX models' accuracy from benchmark.json, in the shape of evaluation reports."""
    if not benchmark:
        return {}
    found = {}
    for name, fmt in (("fp32", "onnx"), ("int8", "onnx_int8")):
        row = next((row for row in benchmark["rows"] if row["format"] == fmt), None)
        if row is not None:
            found[name] = {"split": benchmark["split"], "top1": row["top1"],
                           "per_class_top1": benchmark["per_class_top1"][fmt]}
    return found


def write_model_card(layout: ExportLayout, metadata: dict[str, Any] | None = None) -> Path:
    """Rebuild MODEL_CARD.md from the files of an export folder (`metadata` stands in for a folder without
    metadata.json, holding only model files); returns its path."""
    metadata = json.loads(layout.metadata.read_text()) if layout.metadata.is_file() else metadata
    if metadata is None:
        raise DhaError(f"'{layout.root}' has no metadata.json", "export the model with `dha export`")
    evaluations = {"fp32": _read_json(layout.evaluation), "int8": _read_json(layout.evaluation_of_int8())}
    if not any(evaluations.values()):  # not evaluated yet: the benchmark's scores stand in
        evaluations = {**evaluations, **_benchmark_accuracy(_read_json(layout.benchmark_json))}
    benchmark: list[dict[str, str]] = []
    if layout.benchmark_csv.is_file():
        with layout.benchmark_csv.open(newline="") as handle:
            benchmark = list(csv.DictReader(handle))
    write_text(layout.model_card, model_card(metadata, evaluations, benchmark, layout.network_png.is_file()))
    return layout.model_card
