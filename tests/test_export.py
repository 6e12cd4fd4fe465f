"""Export (ONNX, TorchScript, metadata, parity gate) and derive, on the shared tiny run.

`tiny_run` is read-only: anything that writes works on copies under tmp_path.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cli.main import main
from dha_pipeline.data.batches import ArraySource
from dha_pipeline.data.cache import PreparedData, load_cache
from dha_pipeline.derive import EXACTNESS_TOLERANCE, Child, derive_child, load_child
from dha_pipeline.errors import CheckFailed, DhaError
from dha_pipeline.export.exporter import build_metadata, check_formats, export_child, parity_images
from dha_pipeline.export.parity import Parity, compare_logits
from dha_pipeline.formats import registry
from dha_pipeline.formats.metadata import METADATA_KEY, input_spec, package_versions
from dha_pipeline.formats.onnx_runtime import read_onnx_metadata
from dha_pipeline.formats.torchscript import load_torchscript
from dha_pipeline.preprocess import model_input
from dha_pipeline.layout import ExportLayout, RunLayout
from dha_pipeline.recipe import ExportConfig
from dha_pipeline.search.result import SearchResult
from dha_pipeline.spaces.darts.network import DartsNetwork, NetworkConfig
from dha_pipeline.spaces.registry import get_space

DESIGN_KEYS = {"name", "classes", "input", "search_space", "genotype", "network", "components", "mode", "da_policy",
               "hyperparameters", "params", "macs", "recipe_sha256", "parity", "versions"}
DIGIT_CLASSES = [str(i) for i in range(10)]


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def metadata(export_dir: Path) -> dict:
    return json.loads((export_dir / "metadata.json").read_text())


@pytest.fixture(scope="module")
def layout(run_dir: Path, export_dir: Path) -> RunLayout:
    return RunLayout(run_dir, ExportLayout(export_dir))


@pytest.fixture(scope="module")
def child(layout: RunLayout) -> Child:
    return load_child(layout.child)


@pytest.fixture(scope="module")
def data(layout: RunLayout) -> PreparedData:
    return load_cache(layout.cache)


def parity_set(data: PreparedData, count: int = 256) -> tuple[np.ndarray, str]:
    """The parity images export takes from the prepared splits."""
    return parity_images(data.sources["val"], data.sources["train"], count)


@pytest.fixture(scope="module")
def sample_inputs(data: PreparedData, child: Child) -> np.ndarray:
    """Five real validation images as float32 NCHW model input."""
    return model_input(data.sources["val"].images[:5], child.mean, child.std)


def torch_logits(model: torch.nn.Module, inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(inputs)).numpy()


def perturb_onnx_parity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the ONNX backend used by the parity gate return logits shifted by 1.0."""
    real = registry.FORMATS["onnx"]

    def load(path: Path, runtime):
        run = real.loader(path, runtime)
        return lambda batch: run(batch) + 1.0

    monkeypatch.setitem(registry.FORMATS, "onnx", dataclasses.replace(real, loader=load))


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    """A private copy of runs/tiny/ (so stages may write their stamps and resolved recipe)."""
    target = tmp_path / "runs" / "tiny"
    shutil.copytree(run_dir, target)
    return target


def staging_leftovers(parent: Path, name: str = "tiny") -> list[Path]:
    return [p for p in parent.iterdir() if p.name.startswith(f".{name}.")] if parent.is_dir() else []


# --------------------------------------------------------------------------- files and ONNX properties


def test_export_writes_model_files(export_dir: Path) -> None:
    for name in ("model.onnx", "model.ts", "metadata.json", "MODEL_CARD.md"):
        assert (export_dir / name).is_file(), name
        assert (export_dir / name).stat().st_size > 0, name
    assert staging_leftovers(export_dir.parent) == []


def test_onnx_passes_checker_with_opset_at_least_18(export_dir: Path) -> None:
    onnx.checker.check_model(str(export_dir / "model.onnx"), full_check=True)
    proto = onnx.load(str(export_dir / "model.onnx"))
    opsets = {entry.domain: entry.version for entry in proto.opset_import}
    default = opsets.get("", opsets.get("ai.onnx"))
    assert default is not None and default >= 18


def test_onnx_batch_axis_is_dynamic(export_dir: Path, child: Child, sample_inputs: np.ndarray) -> None:
    proto = onnx.load(str(export_dir / "model.onnx"))
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")

    session = ort.InferenceSession(str(export_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    expected = torch_logits(child.model, sample_inputs)
    for batch in (1, 5):
        out = session.run(None, {name: sample_inputs[:batch]})[0]
        assert out.shape == (batch, len(child.classes))
        np.testing.assert_allclose(out, expected[:batch], atol=1e-4)


def test_torchscript_computes_the_child(export_dir: Path, child: Child, sample_inputs: np.ndarray) -> None:
    module, _ = load_torchscript(export_dir / "model.ts")
    for batch in (1, 5):
        out = torch_logits(module, sample_inputs[:batch])
        assert out.shape == (batch, 10)
        np.testing.assert_allclose(out, torch_logits(child.model, sample_inputs[:batch]), atol=1e-5)


def test_export_files_share_the_model_files_permissions(export_dir: Path) -> None:
    mode = (export_dir / "model.onnx").stat().st_mode & 0o777
    for name in ("metadata.json", "MODEL_CARD.md", "evaluation.json"):
        assert (export_dir / name).stat().st_mode & 0o777 == mode, name


# --------------------------------------------------------------------------- metadata


def test_metadata_has_every_design_key(metadata: dict, child: Child) -> None:
    assert DESIGN_KEYS <= set(metadata)
    assert metadata["name"] == "tiny"
    assert metadata["classes"] == DIGIT_CLASSES == child.classes
    spec = metadata["input"]
    assert spec["size"] == 8 and spec["channels"] == 1
    assert spec["layout"] == "NCHW" and spec["dtype"] == "float32"
    assert spec["pixel_range"] == [0.0, 1.0]
    assert len(spec["mean"]) == len(spec["std"]) == 1
    assert spec["mean"] == child.mean and spec["std"] == child.std
    assert all(s > 0 for s in spec["std"])
    assert metadata["search_space"] == "darts"
    assert metadata["mode"] == "manual"
    assert metadata["genotype"] == child.model.config.genotype.to_dict() == child.info["genotype"]
    assert set(metadata["genotype"]) >= {"normal", "reduce"}
    # the space's description rows, for the model card (which imports no space)
    space = get_space("darts")
    assert metadata["network"] == space.describe(space.genotype_from_dict(metadata["genotype"]))
    assert set(metadata["network"]) == {"normal cell", "reduce cell"}
    assert metadata["components"] == [] and metadata["da_policy"] is None
    hyper = metadata["hyperparameters"]
    # eta as set (manual mode: fixed), not the cosine-scheduled lr of the last step (near 0 after 2 epochs)
    assert hyper["lr"] == 0.05 and hyper["weight_decay"] == 3e-4 and hyper["learned"] is False
    assert hyper["schedule"] == {"kind": "cosine", "lr_min": 0.0, "warmup_epochs": 0, "epochs": 2, "momentum": 0.9}
    assert metadata["params"] == sum(p.numel() for p in child.model.parameters()) > 0
    assert isinstance(metadata["macs"], int) and metadata["macs"] > 0
    assert len(metadata["recipe_sha256"]) == 64
    int(metadata["recipe_sha256"], 16)
    versions = metadata["versions"]
    for package in ("python", "torch", "onnx", "onnxruntime", "numpy"):
        assert versions[package] and versions[package] != "absent", package


def test_metadata_parity_section(metadata: dict) -> None:
    parity = metadata["parity"]
    assert parity["max_abs_diff"] <= 1e-3
    assert parity["top1_agreement"] >= 0.999
    assert parity["num_samples"] >= 256
    assert set(parity["by_format"]) == {"onnx", "torchscript"}
    for result in parity["by_format"].values():
        assert result["max_abs_diff"] <= parity["max_abs_diff"]
        assert result["top1_agreement"] >= parity["top1_agreement"]
        assert result["num_samples"] == parity["num_samples"]


def test_metadata_embedded_in_onnx_equals_metadata_json(export_dir: Path, metadata: dict) -> None:
    embedded = read_onnx_metadata(export_dir / "model.onnx")
    assert embedded.pop("onnx_exporter") in ("dynamo", "legacy")
    assert embedded == metadata
    keys = [entry.key for entry in onnx.load(str(export_dir / "model.onnx")).metadata_props]
    assert keys == [METADATA_KEY]


def test_metadata_embedded_in_torchscript_equals_metadata_json(export_dir: Path, metadata: dict) -> None:
    _, embedded = load_torchscript(export_dir / "model.ts")
    assert embedded == metadata
    with zipfile.ZipFile(export_dir / "model.ts") as archive:  # the contract: an `extra/metadata.json` entry
        entry = next(name for name in archive.namelist() if name.endswith("/extra/metadata.json"))
        assert json.loads(archive.read(entry)) == metadata


def test_read_onnx_metadata_errors(tmp_path: Path, export_dir: Path) -> None:
    with pytest.raises(DhaError, match="does not exist"):
        read_onnx_metadata(tmp_path / "missing.onnx")
    text = tmp_path / "model.onnx"
    text.write_text("not an onnx model\n")
    with pytest.raises(DhaError, match="not a valid ONNX model"):
        read_onnx_metadata(text)
    proto = onnx.load(str(export_dir / "model.onnx"))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(DhaError, match="carries no dha metadata"):
        read_onnx_metadata(bare)


def test_load_torchscript_errors(tmp_path: Path, child: Child, sample_inputs: np.ndarray) -> None:
    text = tmp_path / "model.ts"
    text.write_text("not torchscript\n")
    with pytest.raises(DhaError, match="not a valid TorchScript model"):
        load_torchscript(text)
    plain = tmp_path / "plain.ts"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(child.model.eval(), torch.from_numpy(sample_inputs[:2])), str(plain))
    with pytest.raises(DhaError, match="carries no dha metadata"):
        load_torchscript(plain)


def test_input_spec_and_package_versions() -> None:
    spec = input_spec(32, 3, [0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    assert spec["size"] == 32 and spec["channels"] == 3
    assert spec["mean"] == [0.1, 0.2, 0.3] and spec["std"] == [0.4, 0.5, 0.6]
    assert spec["layout"] == "NCHW" and spec["dtype"] == "float32" and spec["pixel_range"] == [0.0, 1.0]
    assert spec["pixel_scale"] == pytest.approx(1 / 255)
    versions = package_versions()
    assert versions["python"].count(".") == 2
    assert versions["torch"].split("+")[0] == torch.__version__.split("+")[0]


def test_build_metadata_matches_child(child: Child, metadata: dict) -> None:
    built = build_metadata(child, "tiny")
    assert "parity" not in built
    for key in DESIGN_KEYS - {"parity"}:
        assert built[key] == metadata[key], key


# --------------------------------------------------------------------------- formats and parity images


def test_check_formats() -> None:
    assert check_formats(["onnx", "torchscript"]) == ["onnx", "torchscript"]
    assert check_formats(["torchscript", "onnx", "torchscript"]) == ["torchscript", "onnx"]
    with pytest.raises(DhaError, match="tflite"):
        check_formats(["onnx", "tflite"])
    with pytest.raises(DhaError, match="no export format"):
        check_formats([])
    assert check_formats(["pt2", "onnx", "torchscript"]) == ["pt2", "onnx", "torchscript"]
    with pytest.raises(DhaError, match="unknown export format 'onnx_int8'"):  # int8 comes from --int8 only
        check_formats(["onnx_int8"])


def _source(n: int, value: int) -> ArraySource:
    return ArraySource(np.full((n, 4, 4, 1), value, np.uint8), np.zeros(n, np.int64))


def test_parity_images_prefers_val_and_tops_up_from_train() -> None:
    images, source = parity_images(_source(10, 1), _source(50, 2), 8)
    assert source == "val" and len(images) == 8 and (images == 1).all()
    images, source = parity_images(_source(10, 1), _source(50, 2), 25)
    assert source == "val+train" and len(images) == 25
    assert (images[:10] == 1).all() and (images[10:] == 2).all()
    images, _ = parity_images(_source(3, 1), _source(4, 2), 100)
    assert len(images) == 7
    images, source = parity_images(_source(3, 1), None, 100)
    assert source == "val" and len(images) == 3


# --------------------------------------------------------------------------- compare_logits / Parity


def test_compare_logits_identical() -> None:
    reference = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    result = compare_logits(reference, reference.copy())
    assert result == Parity(0.0, 1.0, 7)
    assert result.passes(0.0, 1.0)


def test_compare_logits_known_values() -> None:
    reference = np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.5, 0.0]], np.float32)
    candidate = reference.copy()
    candidate[0, 1] += 0.25          # same argmax, diff 0.25
    candidate[3] = [0.0, 0.5, 1.0]   # argmax flips, diff 1.0
    result = compare_logits(reference, candidate)
    assert result.max_abs_diff == pytest.approx(1.0)
    assert result.top1_agreement == pytest.approx(0.75)
    assert result.num_samples == 4
    assert isinstance(result.max_abs_diff, float) and isinstance(result.top1_agreement, float)
    assert result.to_dict() == {"max_abs_diff": result.max_abs_diff, "top1_agreement": 0.75, "num_samples": 4}


def test_compare_logits_uses_float64_for_the_difference() -> None:
    reference = np.array([[1e8, 0.0]], np.float32)
    candidate = np.array([[1e8, 0.0]], np.float64) + np.array([[0.0, 1e-3]])
    assert compare_logits(reference, candidate).max_abs_diff == pytest.approx(1e-3)


def test_parity_thresholds_are_inclusive_and_nan_fails() -> None:
    assert Parity(1e-3, 0.999, 256).passes(1e-3, 0.999)
    assert not Parity(1.1e-3, 1.0, 256).passes(1e-3, 0.999)
    assert not Parity(0.0, 0.998, 256).passes(1e-3, 0.999)
    reference = np.zeros((3, 2), np.float32)
    candidate = reference.copy()
    candidate[1, 0] = np.nan
    assert not compare_logits(reference, candidate).passes(1e-3, 0.0)


def test_compare_logits_rejects_mismatched_shapes() -> None:
    reference = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], np.float32)
    candidate = reference[:1]
    try:
        result = compare_logits(reference, candidate)
    except ValueError:
        return
    assert not result.passes(1e-3, 0.999)


# --------------------------------------------------------------------------- export_child and the parity gate


def test_export_child_writes_requested_formats_and_removes_stale_ones(tmp_path: Path, child: Child,
                                                                      data: PreparedData) -> None:
    target = tmp_path / "exports" / "tiny"
    target.mkdir(parents=True)
    (target / "model.ts").write_text("stale torchscript from an earlier export")
    (target / "notes.txt").write_text("kept")
    result = export_child(child, "tiny", *parity_set(data), ExportConfig(), ["onnx"], ExportLayout(target))
    assert result.files == {"onnx": target / "model.onnx"}
    assert set(result.parity) == {"onnx"}
    assert result.parity["onnx"].passes(1e-3, 0.999)
    assert sorted(p.name for p in target.iterdir()) == ["MODEL_CARD.md", "metadata.json", "model.onnx", "network.png",
                                                        "notes.txt"]
    assert json.loads((target / "metadata.json").read_text()) == result.metadata
    assert result.metadata["parity"]["num_samples"] == 256
    assert set(result.metadata["parity"]["by_format"]) == {"onnx"}
    assert staging_leftovers(target.parent) == []


def test_parity_gate_failure_writes_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, child: Child,
                                            data: PreparedData) -> None:
    perturb_onnx_parity(monkeypatch)
    parent = tmp_path / "exports"
    target = parent / "tiny"
    with pytest.raises(CheckFailed) as failure:
        # torchscript passes first; the later onnx failure must still leave no file behind
        export_child(child, "tiny", *parity_set(data), ExportConfig(), ["torchscript", "onnx"], ExportLayout(target))
    assert failure.value.exit_code == 1
    message = str(failure.value)
    assert "onnx" in message and "parity" in message and "nothing was written" in message
    assert not target.exists() or list(target.iterdir()) == []
    assert staging_leftovers(parent) == []
    assert [p for p in parent.iterdir() if p != target] == []


def test_parity_gate_failure_keeps_an_earlier_export_untouched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                               child: Child, data: PreparedData,
                                                               export_dir: Path) -> None:
    target = tmp_path / "exports" / "tiny"
    shutil.copytree(export_dir, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    perturb_onnx_parity(monkeypatch)
    with pytest.raises(CheckFailed):
        export_child(child, "tiny", *parity_set(data), ExportConfig(), ["onnx"], ExportLayout(target))
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert staging_leftovers(target.parent) == []


def test_cli_export_parity_failure_exits_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, run_dir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run_copy = copy_run(run_dir, tmp_path)
    exports = tmp_path / "exports"
    perturb_onnx_parity(monkeypatch)
    code = main(["export", str(run_copy), "--force", "--format", "onnx",
                 "--set", f"exports_dir={json.dumps(str(exports))}"])
    assert code == 1
    err = capsys.readouterr().err
    assert "parity gate" in err
    assert not (exports / "tiny").exists() or list((exports / "tiny").iterdir()) == []
    assert staging_leftovers(exports) == []
    # the failed stage wrote no stamp: the copied one is unchanged
    assert (run_copy / "stages" / "export.json").read_text() == (run_dir / "stages" / "export.json").read_text()


def test_cli_export_unknown_format_exits_2(tmp_path: Path, run_dir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run_copy = copy_run(run_dir, tmp_path)
    exports = tmp_path / "exports"
    code = main(["export", str(run_copy), "--format", "onnx,tflite",
                 "--set", f"exports_dir={json.dumps(str(exports))}"])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "tflite" in lines[0]
    assert not exports.exists() or list(exports.rglob("*")) == []


# --------------------------------------------------------------------------- derive


def _trained_network(result: Path) -> DartsNetwork:
    trained = SearchResult.load(result)
    network = DartsNetwork(NetworkConfig.from_dict(trained.network))
    network.load_state_dict(trained.state_dict)
    return network.eval()


def test_child_logits_equal_trained_network(layout: RunLayout, child: Child, data: PreparedData) -> None:
    trained = _trained_network(layout.result)
    inputs = model_input(data.sources["val"].images[:64], child.mean, child.std)
    np.testing.assert_allclose(torch_logits(child.model, inputs), torch_logits(trained, inputs),
                               atol=EXACTNESS_TOLERANCE, rtol=0)


def test_derive_child_round_trip(tmp_path: Path, layout: RunLayout, child: Child) -> None:
    target = tmp_path / "derived" / "child.pt"
    derived, gap = derive_child(layout.result, target, target.parent / "genotype.json")
    assert 0.0 <= gap <= EXACTNESS_TOLERANCE
    assert target.is_file()
    assert json.loads((target.parent / "genotype.json").read_text()) == derived.info["genotype"]
    assert not derived.model.training
    assert derived.model.config.auxiliary is False and derived.model.config.drop_path == 0.0
    assert derived.info["mode"] == "manual" and derived.info["search_space"] == "darts" == derived.space
    assert (derived.channels, derived.image_size) == (1, 8)

    loaded = load_child(target)
    assert loaded.classes == derived.classes == DIGIT_CLASSES
    assert loaded.mean == derived.mean and loaded.std == derived.std
    assert loaded.info == derived.info
    assert loaded.model.config == derived.model.config
    assert (loaded.space, loaded.channels, loaded.image_size) == (derived.space, derived.channels, derived.image_size)
    assert not loaded.model.training
    original, reloaded = derived.model.state_dict(), loaded.model.state_dict()
    assert original.keys() == reloaded.keys()
    assert all(torch.equal(original[k], reloaded[k]) for k in original)
    # deriving again reproduces the stage's own child.pt
    stage_child = child.model.state_dict()
    assert stage_child.keys() == original.keys()
    assert all(torch.equal(stage_child[k], original[k]) for k in original)
    assert child.info == derived.info


def test_derive_strips_auxiliary_head_and_drop_path(tmp_path: Path, layout: RunLayout, data: PreparedData) -> None:
    result = SearchResult.load(layout.result)
    config = dataclasses.replace(NetworkConfig.from_dict(result.network), auxiliary=True, drop_path=0.3)
    torch.manual_seed(0)
    trained = DartsNetwork(config)
    assert trained.auxiliary_head is not None
    with_head = tmp_path / "result.pt"
    dataclasses.replace(result, network=config.to_dict(), state_dict=trained.state_dict()).save(with_head)

    derived, gap = derive_child(with_head, tmp_path / "derived" / "child.pt", tmp_path / "derived" / "genotype.json")
    assert gap <= EXACTNESS_TOLERANCE
    assert derived.model.config.auxiliary is False and derived.model.config.drop_path == 0.0
    assert derived.model.auxiliary_head is None
    assert not any(k.startswith("auxiliary_head.") for k in derived.model.state_dict())
    inputs = model_input(data.sources["val"].images[:16], result.mean, result.std)
    np.testing.assert_allclose(torch_logits(derived.model, inputs), torch_logits(trained.eval(), inputs),
                               atol=EXACTNESS_TOLERANCE, rtol=0)


def test_derive_child_bad_results(tmp_path: Path, layout: RunLayout) -> None:
    child, genotype = tmp_path / "child.pt", tmp_path / "genotype.json"
    with pytest.raises(DhaError, match="does not exist"):
        derive_child(tmp_path / "missing.pt", child, genotype)
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(DhaError, match="cannot be read"):
        derive_child(bad, child, genotype)
    with pytest.raises(DhaError, match="not a search result"):
        derive_child(layout.checkpoint, child, genotype)  # the resume checkpoint is not what derive reads
    with pytest.raises(DhaError, match="does not exist"):
        load_child(tmp_path / "missing_child.pt")
    assert not child.exists() and not genotype.exists()


def test_model_card_reports_eta_with_its_schedule(export_dir: Path) -> None:
    card = (export_dir / "MODEL_CARD.md").read_text()
    assert "- eta (fixed by the recipe): base learning rate 0.05, weight decay 0.0003\n" in card
    assert "- schedule: cosine to 0 over 2 epochs, SGD momentum 0.9\n" in card
    assert "## Accuracy per class" in card and "| class | fp32 (test) |" in card
    metadata = json.loads((export_dir / "metadata.json").read_text())
    assert f"- normal cell: {metadata['network']['normal cell']}\n" in card
