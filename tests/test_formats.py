"""The model format records (dha_pipeline/formats/): one complete, consistent table, and the record a file's
suffix picks. No model is built here: loaders are replaced where a test follows one."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

import pytest

from dha_pipeline.errors import DhaError
from dha_pipeline.recipe import recipe_from_dict
from dha_pipeline.export.exporter import check_formats
from dha_pipeline.formats import registry
from dha_pipeline.formats.base import CPU, DEFAULT_RUNTIME
from dha_pipeline.formats.registry import FORMATS, PRIMARY_ORDER, WRITABLE, format_of, get_format, load_backend
from dha_pipeline.layout import ExportLayout, RunLayout


def test_the_format_table_is_complete_and_consistent() -> None:
    records = list(FORMATS.values())
    assert list(FORMATS) == [record.name for record in records]  # keyed by each record's own name
    assert list(FORMATS) == ["torch", "torchscript", "pt2", "onnx", "onnx_int8"]  # the benchmark's table order
    for field in ("name", "file_name", "label"):
        values = [getattr(record, field) for record in records]
        assert len(set(values)) == len(values), field
    for record in records:
        assert record.suffix.startswith(".") and record.suffix == record.suffix.lower(), record.name
        assert record.file_name.endswith(record.suffix) and Path(record.file_name).suffix == record.suffix
        assert record.label and callable(record.loader) and callable(record.read_metadata)
        assert record.writer is None or record.in_export, record.name  # export writes into the export folder
        assert (record.embed is not None) == record.in_export, record.name  # every exported file has metadata
    assert get_format("pt2") is FORMATS["pt2"]
    with pytest.raises(DhaError, match="unknown model format 'tflite'"):
        get_format("tflite")


def test_the_writable_formats_are_exactly_those_export_accepts() -> None:
    writable = [record.name for record in FORMATS.values() if record.writer is not None]
    assert set(WRITABLE) == set(writable) == {"onnx", "torchscript", "pt2"}
    assert check_formats(list(WRITABLE)) == list(WRITABLE)
    for name in set(FORMATS) - set(writable):  # the int8 model (from --int8) and the derived child
        with pytest.raises(DhaError, match=f"unknown export format '{name}'"):
            check_formats([name])
    with pytest.raises(DhaError, match=r"'export.formats\[1\]' = 'onnx_int8' is not allowed"):
        recipe_from_dict({"export": {"formats": ["onnx", "onnx_int8"]}})
    assert recipe_from_dict({}).export.formats == list(WRITABLE), "a recipe exports every writable format"
    assert set(PRIMARY_ORDER) <= set(WRITABLE)
    assert WRITABLE[:len(PRIMARY_ORDER)] == PRIMARY_ORDER  # the order --format and its errors list them


def test_the_layout_names_files_from_the_records() -> None:
    layout = ExportLayout(Path("exports/x"))
    for record in FORMATS.values():
        if record.in_export:
            assert layout.model(record.name) == Path("exports/x") / record.file_name
    with pytest.raises(KeyError, match="no file in an export folder"):
        layout.model("torch")
    assert RunLayout.of("runs", "exports", "x").child == Path("runs/x/derived") / FORMATS["torch"].file_name
    assert layout.primary_model(["pt2", "torchscript"]) == Path("exports/x/model.ts")


@pytest.mark.parametrize("name, expected", [
    ("model.onnx", "onnx"), ("MODEL.ONNX", "onnx"), ("model.int8.onnx", "onnx"), ("model.ts", "torchscript"),
    ("model.pt2", "pt2"), ("child.pt", "torch"), ("derived/child.PT", "torch"),
])
def test_the_suffix_picks_the_record(name: str, expected: str) -> None:
    assert format_of(name) is FORMATS[expected]


def test_formats_that_share_a_suffix_load_alike() -> None:
    """format_of picks the first record of a suffix (model.int8.onnx -> onnx): the others must load the same."""
    by_suffix = defaultdict(list)
    for record in FORMATS.values():
        by_suffix[record.suffix].append(record)
    assert [record.name for record in by_suffix[".onnx"]] == ["onnx", "onnx_int8"]
    for records in by_suffix.values():
        assert len({(record.loader, record.read_metadata) for record in records}) == 1


def test_load_backend_calls_the_loader_of_the_suffix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, record in FORMATS.items():
        monkeypatch.setitem(registry.FORMATS, name, dataclasses.replace(
            record, loader=lambda path, runtime, name=name: (name, path, runtime)))
    for file_name, expected in (("model.ts", "torchscript"), ("model.pt2", "pt2"), ("child.pt", "torch"),
                                ("model.int8.onnx", "onnx")):
        (tmp_path / file_name).write_bytes(b"")
        assert load_backend(tmp_path / file_name) == (expected, tmp_path / file_name, DEFAULT_RUNTIME)
    assert load_backend(str(tmp_path / "model.ts"), CPU) == ("torchscript", tmp_path / "model.ts", CPU)


def test_load_backend_errors(tmp_path: Path) -> None:
    with pytest.raises(DhaError, match="model file '.*absent.onnx' does not exist"):
        load_backend(tmp_path / "absent.onnx")
    with pytest.raises(DhaError, match="does not exist"):
        load_backend(tmp_path)  # a directory is not a model file
    other = tmp_path / "model.tflite"
    other.write_text("x")
    with pytest.raises(DhaError, match=r"has an unknown type '\.tflite'") as error:
        load_backend(other)
    assert str(error.value).endswith("; pass a .pt, .ts, .pt2 or .onnx file (written by dha export or dha derive)")
