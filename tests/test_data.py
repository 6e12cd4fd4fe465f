"""Dataset sources, the split/resize step and the verified cache (dha_pipeline/data/)."""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_imagefolder, make_npz
from PIL import Image

from dha_pipeline.data import digits
from dha_pipeline.data.cache import CACHE_FORMAT, MANIFEST, PreparedData, build_dataset, load_cache, save_cache
from dha_pipeline.data.images import IMAGE_SUFFIXES, decode_files
from dha_pipeline.preprocess import read_image
from dha_pipeline.data.source import (LOADERS, SourceSplit, array_fingerprint, check_labels, load_source,
                                      parse_spec)
from dha_pipeline.errors import DhaError
from dha_pipeline.preprocess import prepare_image
from dha_pipeline.choices import SPLITS
from dha_pipeline.recipe import DataConfig

DIGITS_TOTAL = 1797
DIGITS_CLASSES = 10


# --------------------------------------------------------------------------- helpers


def rows(x: np.ndarray, y: np.ndarray) -> list[bytes]:
    """Each (image, label) pair as one hashable byte string, sorted: a multiset of samples."""
    flat = np.ascontiguousarray(x.reshape(len(x), -1))
    return sorted(flat[i].tobytes() + int(y[i]).to_bytes(8, "little") for i in range(len(x)))


def all_rows(data: PreparedData) -> list[bytes]:
    return sorted(r for split in SPLITS for r in rows(data.sources[split].images, data.sources[split].labels))


def split_files(root: Path, split: str) -> list[Path]:
    """Image files of one imagefolder split in the loader's order (class folders sorted, then files sorted)."""
    return [p for class_dir in sorted(d for d in (root / split).iterdir() if d.is_dir())
            for p in sorted(class_dir.iterdir())]


def garbage(path: Path) -> Path:
    path.write_bytes(b"this is not an image at all" * 4)
    return path


def rewrite_npz(path: Path, **changes: np.ndarray | None) -> Path:
    """Re-save an npz archive with some arrays replaced (or dropped, when given None)."""
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def digits_data() -> PreparedData:
    """The default digits dataset at its native 8x8, one channel."""
    return build_dataset(DataConfig(image_size=8, channels="1"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only imagefolder tree: cat/dog, 6 images per class, mixed sizes, 0.jpg grayscale."""
    return make_imagefolder(tmp_path_factory.mktemp("folder") / "ds")


# --------------------------------------------------------------------------- source.py


def test_parse_spec_valid() -> None:
    assert parse_spec("digits") == ("digits", "")
    assert parse_spec("npz:/data/x.npz") == ("npz", "/data/x.npz")
    assert parse_spec(" NPZ:/data/x.npz") == ("npz", "/data/x.npz")
    # only the first colon separates kind and path
    assert parse_spec("imagefolder:C:/data/set") == ("imagefolder", "C:/data/set")


def test_parse_spec_unknown_kind_lists_valid_kinds() -> None:
    with pytest.raises(DhaError) as info:
        parse_spec("mnist:/data")
    message = str(info.value)
    assert "unknown dataset kind 'mnist'" in message
    for kind in LOADERS:
        assert kind in message
    assert "npz:PATH" in message and "imagefolder:PATH" in message and "imagenet:PATH" in message
    assert "digits:PATH" not in message


@pytest.mark.parametrize("kind", sorted(k for k in LOADERS if k != "digits"))
@pytest.mark.parametrize("suffix", ["", ":"])
def test_parse_spec_kind_without_path(kind: str, suffix: str) -> None:
    with pytest.raises(DhaError, match="needs a path") as info:
        parse_spec(kind + suffix)
    assert f"{kind}:/path/to/data" in str(info.value)


def test_load_source_unknown_kind() -> None:
    with pytest.raises(DhaError, match="unknown dataset kind"):
        load_source("nope")


def test_check_labels() -> None:
    out = check_labels("t", np.array([0, 2, 1], dtype=np.int32), 3)
    assert out.dtype == np.int64 and out.tolist() == [0, 2, 1]
    with pytest.raises(DhaError, match=r"out of range \[0, 2\]: \[-1, 3\]"):
        check_labels("t", np.array([0, 3, -1, 3]), 3)
    with pytest.raises(DhaError, match="1-D integer"):
        check_labels("t", np.array([0.0, 1.0]), 3)
    with pytest.raises(DhaError, match="1-D integer"):
        check_labels("t", np.zeros((2, 2), dtype=np.int64), 3)


def test_array_fingerprint() -> None:
    a = np.arange(12, dtype=np.uint8)
    assert array_fingerprint(a) == array_fingerprint(a.copy())
    assert array_fingerprint(a) != array_fingerprint(a.reshape(3, 4))  # same bytes, other shape
    assert array_fingerprint(a) != array_fingerprint(a.astype(np.int8))  # same bytes, other dtype
    b = a.copy()
    b[5] += 1
    assert array_fingerprint(a) != array_fingerprint(b)
    assert len(SourceSplit(a, np.zeros(12))) == 12


# --------------------------------------------------------------------------- digits


def test_digits_source() -> None:
    data = digits.load("")
    assert list(data.splits) == ["train"]
    images, labels = data.splits["train"].images, data.splits["train"].labels
    assert images.shape == (DIGITS_TOTAL, 8, 8) and images.dtype == np.uint8
    assert images.min() == 0 and images.max() == 255
    assert labels.dtype == np.int64 and sorted(set(labels.tolist())) == list(range(DIGITS_CLASSES))
    assert data.classes == [str(i) for i in range(DIGITS_CLASSES)]
    assert data.fingerprint == digits.load("").fingerprint


def test_digits_split_sizes_and_dtypes(digits_data: PreparedData) -> None:
    x = {split: source.images for split, source in digits_data.sources.items()}
    y = {split: source.labels for split, source in digits_data.sources.items()}
    assert set(x) == set(y) == set(SPLITS)
    n_test = math.ceil(0.2 * DIGITS_TOTAL)
    n_val = math.ceil(0.1 * (DIGITS_TOTAL - n_test))
    expected = {"test": n_test, "val": n_val, "train": DIGITS_TOTAL - n_test - n_val}
    assert expected == {"train": 1293, "val": 144, "test": 360}
    for split in SPLITS:
        assert x[split].shape == (expected[split], 8, 8, 1)
        assert x[split].dtype == np.uint8 and x[split].flags.c_contiguous
        assert y[split].shape == (expected[split],) and y[split].dtype == np.int64
    assert digits_data.channels == 1 and digits_data.image_size == 8
    assert digits_data.classes == [str(i) for i in range(DIGITS_CLASSES)]


def test_digits_splits_partition_the_source(digits_data: PreparedData) -> None:
    """train + val + test hold every source sample exactly once (as a multiset)."""
    source = digits.load("").splits["train"]
    assert all_rows(digits_data) == rows(source.images, source.labels)


def test_digits_splits_are_stratified(digits_data: PreparedData) -> None:
    totals = np.bincount(digits.load("").splits["train"].labels)
    for split in SPLITS:
        counts = np.bincount(digits_data.sources[split].labels, minlength=DIGITS_CLASSES)
        assert (counts > 0).all(), split
    # each class is held out for test in (about) the test fraction
    test_counts = np.bincount(digits_data.sources["test"].labels, minlength=DIGITS_CLASSES)
    assert np.all(np.abs(test_counts - 0.2 * totals) <= 1)


def test_digits_splits_fixed_by_seed(digits_data: PreparedData) -> None:
    again = build_dataset(DataConfig(image_size=8, channels="1"))
    other = build_dataset(DataConfig(image_size=8, channels="1", split_seed=1))
    for split in SPLITS:
        np.testing.assert_array_equal(again.sources[split].images, digits_data.sources[split].images)
        np.testing.assert_array_equal(again.sources[split].labels, digits_data.sources[split].labels)
        assert len(other.sources[split].labels) == len(digits_data.sources[split].labels)
    assert again.manifest == digits_data.manifest
    assert not np.array_equal(other.sources["test"].images, digits_data.sources["test"].images)
    assert not np.array_equal(other.sources["test"].labels, digits_data.sources["test"].labels)
    assert other.manifest["split"]["split_seed"] == 1
    assert all_rows(other) == all_rows(digits_data)


def test_digits_manifest(digits_data: PreparedData) -> None:
    manifest = digits_data.manifest
    assert manifest["format"] == CACHE_FORMAT
    assert manifest["dataset"] == "digits"
    assert manifest["classes"] == digits_data.classes
    assert manifest["image_size"] == 8 and manifest["channels"] == 1
    assert manifest["resize"] == "bilinear"
    assert manifest["split"] == {"val_fraction": 0.1, "test_fraction": 0.2, "split_seed": 0, "train_subset": 0,
                                 "given": ["train"]}
    assert manifest["source_sha256"] == digits.load("").fingerprint
    assert manifest["bad_files"] == []
    assert manifest["mean"] == digits_data.mean and manifest["std"] == digits_data.std
    for split in SPLITS:
        counts = manifest["counts"][split]
        assert len(counts) == DIGITS_CLASSES
        assert sum(counts) == len(digits_data.sources[split].labels)
        assert counts == np.bincount(digits_data.sources[split].labels, minlength=DIGITS_CLASSES).tolist()
    json.dumps(manifest)  # JSON-serializable as is


def test_digits_mean_std_from_train_only(digits_data: PreparedData) -> None:
    train = digits_data.sources["train"].images.astype(np.float64) / 255.0
    np.testing.assert_allclose(digits_data.mean, train.mean(axis=(0, 1, 2)), rtol=1e-9)
    np.testing.assert_allclose(digits_data.std, train.std(axis=(0, 1, 2)), rtol=1e-7)
    everything = np.concatenate([digits_data.sources[s].images for s in SPLITS]).astype(np.float64) / 255.0
    assert abs(everything.mean() - digits_data.mean[0]) > 1e-6  # the check above discriminates
    assert all(isinstance(v, float) for v in digits_data.mean + digits_data.std)


def test_digits_size_channels_and_auto_channels() -> None:
    data = build_dataset(DataConfig(image_size=12, channels="3"))
    assert data.sources["train"].images.shape[1:] == (12, 12, 3)
    assert data.manifest["image_size"] == 12 and data.manifest["channels"] == 3
    assert len(data.mean) == len(data.std) == 3
    test = data.sources["test"].images
    np.testing.assert_array_equal(test[..., 0], test[..., 2])  # gray repeated
    auto = build_dataset(DataConfig(image_size=8, channels="auto"))
    assert auto.channels == 1


def test_train_subset_is_stratified(digits_data: PreparedData) -> None:
    data = build_dataset(DataConfig(image_size=8, channels="1", train_subset=200))
    assert data.sources["train"].images.shape == (200, 8, 8, 1) and len(data.sources["train"].labels) == 200
    counts = np.bincount(data.sources["train"].labels, minlength=DIGITS_CLASSES)
    full = np.bincount(digits_data.sources["train"].labels, minlength=DIGITS_CLASSES)
    assert (counts > 0).all()
    assert np.all(np.abs(counts - full * 200 / len(digits_data.sources["train"].labels)) <= 1)
    # the subset comes out of the full train split; val and test are untouched
    full_rows = rows(digits_data.sources["train"].images, digits_data.sources["train"].labels)
    subset_rows = rows(data.sources["train"].images, data.sources["train"].labels)
    remaining = list(full_rows)
    for r in subset_rows:
        remaining.remove(r)
    assert len(remaining) == len(full_rows) - 200
    for split in ("val", "test"):
        np.testing.assert_array_equal(data.sources[split].images, digits_data.sources[split].images)
    assert data.manifest["split"]["train_subset"] == 200
    assert sum(data.manifest["counts"]["train"]) == 200
    train = data.sources["train"].images.astype(np.float64) / 255.0
    np.testing.assert_allclose(data.mean, train.mean(axis=(0, 1, 2)), rtol=1e-9)


def test_train_subset_not_smaller_keeps_all(digits_data: PreparedData) -> None:
    data = build_dataset(DataConfig(image_size=8, channels="1", train_subset=10_000))
    np.testing.assert_array_equal(data.sources["train"].labels, digits_data.sources["train"].labels)


def test_train_subset_exact_size_when_fraction_rounds_up() -> None:
    data = build_dataset(DataConfig(image_size=8, channels="1", train_subset=13))
    assert len(data.sources["train"].labels) == 13


# --------------------------------------------------------------------------- npz


def test_npz_grayscale_nhw(tmp_path: Path) -> None:
    path = make_npz(tmp_path / "d.npz")
    with np.load(path) as archive:
        x_test, y_test = archive["x_test"], archive["y_test"]
    source = load_source(f"npz:{path}")
    assert source.classes == ["a", "b", "c"]
    assert sorted(source.splits) == ["test", "train"]
    assert source.splits["train"].images.shape == (60, 10, 10)
    assert source.splits["train"].labels.dtype == np.int64
    data = build_dataset(DataConfig(dataset=f"npz:{path}", image_size=10, channels="auto"))
    assert data.channels == 1 and data.image_size == 10
    assert len(data.sources["train"].labels) + len(data.sources["val"].labels) == 60
    assert len(data.sources["val"].labels) == 6  # carved: 10% of train, stratified
    assert sorted(set(data.sources["val"].labels.tolist())) == [0, 1, 2]
    np.testing.assert_array_equal(data.sources["test"].images, x_test[:, :, :, None])  # no resize needed: copied as is
    np.testing.assert_array_equal(data.sources["test"].labels, y_test)
    assert data.manifest["split"]["given"] == ["test", "train"]


def test_npz_rgb_nhwc_resized(tmp_path: Path) -> None:
    path = make_npz(tmp_path / "d.npz", channels=3)
    with np.load(path) as archive:
        x_test = archive["x_test"]
    data = build_dataset(DataConfig(dataset=f"npz:{path}", image_size=6, channels="auto"))
    assert data.sources["train"].images.shape == (54, 6, 6, 3)
    assert data.sources["test"].images.shape == (20, 6, 6, 3) and data.sources["test"].images.dtype == np.uint8
    for i in (0, 7, 19):
        np.testing.assert_array_equal(data.sources["test"].images[i], prepare_image(x_test[i], 6, 3))
    gray = build_dataset(DataConfig(dataset=f"npz:{path}", image_size=6, channels="1"))
    assert gray.sources["test"].images.shape == (20, 6, 6, 1)
    np.testing.assert_array_equal(gray.sources["test"].images[3], prepare_image(x_test[3], 6, 1))


def test_npz_rgba_auto_drops_alpha(tmp_path: Path) -> None:
    path = make_npz(tmp_path / "d.npz", channels=4)
    data = build_dataset(DataConfig(dataset=f"npz:{path}", image_size=10, channels="auto"))
    assert data.channels == 3
    with np.load(path) as archive:
        np.testing.assert_array_equal(data.sources["test"].images, archive["x_test"][..., :3])


def test_npz_given_val_is_used(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x_val = rng.integers(0, 256, (9, 10, 10), dtype=np.uint8)
    y_val = np.array([0, 1, 2] * 3)
    path = make_npz(tmp_path / "d.npz", x_val=x_val, y_val=y_val)
    data = build_dataset(DataConfig(dataset=f"npz:{path}", image_size=10, channels="1"))
    assert len(data.sources["train"].labels) == 60  # nothing carved from train
    np.testing.assert_array_equal(data.sources["val"].images[..., 0], x_val)
    np.testing.assert_array_equal(data.sources["val"].labels, y_val)
    assert data.manifest["split"]["given"] == ["test", "train", "val"]
    assert data.manifest["counts"]["val"] == [3, 3, 3]


@pytest.mark.parametrize("key", ["x_train", "y_train", "x_test", "y_test", "classes"])
def test_npz_missing_key(tmp_path: Path, key: str) -> None:
    path = rewrite_npz(make_npz(tmp_path / "d.npz"), **{key: None})
    with pytest.raises(DhaError, match="missing keys") as info:
        load_source(f"npz:{path}")
    assert f"'{key}'" in str(info.value)


@pytest.mark.parametrize(("given", "missing"), [("x_val", "y_val"), ("y_val", "x_val")])
def test_npz_val_keys_come_together(tmp_path: Path, given: str, missing: str) -> None:
    arrays = {"x_val": np.zeros((3, 10, 10), np.uint8), "y_val": np.array([0, 1, 2])}
    path = make_npz(tmp_path / "d.npz", **{given: arrays[given]})
    with pytest.raises(DhaError, match="missing keys") as info:
        load_source(f"npz:{path}")
    assert f"'{missing}'" in str(info.value)


def test_npz_length_mismatch(tmp_path: Path) -> None:
    path = make_npz(tmp_path / "d.npz", y_train=np.arange(59) % 3)
    with pytest.raises(DhaError, match="x_train has 60 images but y_train has 59 labels"):
        load_source(f"npz:{path}")


@pytest.mark.parametrize("bad_label", [3, -1])
def test_npz_label_out_of_range(tmp_path: Path, bad_label: int) -> None:
    y = np.arange(20) % 3
    y[4] = bad_label
    path = make_npz(tmp_path / "d.npz", y_test=y)
    with pytest.raises(DhaError, match=r"y_test has labels out of range \[0, 2\]") as info:
        load_source(f"npz:{path}")
    assert f"[{bad_label}]" in str(info.value)


def test_npz_float_labels(tmp_path: Path) -> None:
    path = make_npz(tmp_path / "d.npz", y_train=(np.arange(60) % 3).astype(np.float32))
    with pytest.raises(DhaError, match="1-D integer"):
        load_source(f"npz:{path}")


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint16])
def test_npz_non_uint8_images(tmp_path: Path, dtype: type) -> None:
    path = make_npz(tmp_path / "d.npz", x_train=np.zeros((60, 10, 10), dtype=dtype))
    with pytest.raises(DhaError, match=f"'x_train' has dtype {np.dtype(dtype)}") as info:
        load_source(f"npz:{path}")
    assert "uint8" in str(info.value)


@pytest.mark.parametrize("shape", [(60, 100), (60, 10, 10, 2), (60, 1, 10, 10, 3)])
def test_npz_bad_image_shape(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = make_npz(tmp_path / "d.npz", x_train=np.zeros(shape, dtype=np.uint8))
    with pytest.raises(DhaError, match="'x_train' has shape") as info:
        load_source(f"npz:{path}")
    assert str(shape) in str(info.value)


def test_npz_empty_classes_and_split(tmp_path: Path) -> None:
    path = rewrite_npz(make_npz(tmp_path / "a.npz"), classes=np.array([], dtype="<U1"))
    with pytest.raises(DhaError, match="'classes' is empty"):
        load_source(f"npz:{path}")
    path = make_npz(tmp_path / "b.npz", x_test=np.zeros((0, 10, 10), np.uint8), y_test=np.zeros(0, np.int64))
    with pytest.raises(DhaError, match="x_test is empty"):
        load_source(f"npz:{path}")


def test_npz_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DhaError, match="does not exist") as info:
        load_source(f"npz:{tmp_path / 'nope.npz'}")
    assert "nope.npz" in str(info.value)
    with pytest.raises(DhaError, match="does not exist"):  # a directory is not a file
        load_source(f"npz:{tmp_path}")


@pytest.mark.parametrize("content", [b"hello, not a zip archive\n" * 3, b"PK\x03\x04 truncated zip"])
def test_npz_not_an_npz(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(content)
    with pytest.raises(DhaError, match="is not a readable .npz archive"):
        load_source(f"npz:{path}")


def test_npz_zip_without_arrays(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(DhaError, match="missing keys"):
        load_source(f"npz:{path}")


def test_npz_given_a_npy_file(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    with open(path, "wb") as handle:
        np.save(handle, np.zeros(3))
    with pytest.raises(DhaError, match="npz"):
        load_source(f"npz:{path}")


def test_npz_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(b"")
    with pytest.raises(DhaError, match="not a readable"):
        load_source(f"npz:{path}")


def test_npz_fingerprint(tmp_path: Path) -> None:
    a = load_source(f"npz:{make_npz(tmp_path / 'a.npz')}").fingerprint
    b = load_source(f"npz:{make_npz(tmp_path / 'b.npz')}").fingerprint
    c = load_source(f"npz:{make_npz(tmp_path / 'c.npz', seed=1)}").fingerprint
    assert a == b != c


# --------------------------------------------------------------------------- images.py


def test_decode_file_modes(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg")
    image = read_image(tmp_path / "rgb.png")
    np.testing.assert_array_equal(image, rgb)  # lossless
    assert image.dtype == np.uint8 and image.flags.c_contiguous
    gray = read_image(tmp_path / "gray.png")
    np.testing.assert_array_equal(gray, np.asarray(Image.fromarray(rgb).convert("L")))
    assert gray.shape == (7, 5)
    assert read_image(tmp_path / "rgba.png").shape == (7, 5, 4)
    assert read_image(tmp_path / "rgb.jpg").shape == (7, 5, 3)


def test_decode_files_collects_bad_ones(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(good)
    bad = garbage(tmp_path / "bad.jpg")
    paths = [bad, good, bad]
    with pytest.raises(DhaError, match="2 unreadable image") as info:
        decode_files(paths, skip_bad=False, root=tmp_path, description="t")
    assert str(bad) in str(info.value) and "skip" in str(info.value)
    images, kept, bad_list, fingerprint = decode_files(paths, skip_bad=True, root=tmp_path, description="t")
    assert kept == [1] and bad_list == [str(bad), str(bad)] and len(images) == 1
    assert fingerprint == decode_files([good], skip_bad=False, root=tmp_path, description="t")[3]


def test_decode_files_many_bad_are_summarized(tmp_path: Path) -> None:
    paths = [garbage(tmp_path / f"{i:02d}.png") for i in range(25)]
    with pytest.raises(DhaError, match=r"25 unreadable image\(s\)") as info:
        decode_files(paths, skip_bad=False, root=tmp_path, description="t")
    message = str(info.value)
    assert str(paths[19]) in message and str(paths[20]) not in message
    assert "(25 in all)" in message


def test_decode_files_fingerprint_follows_bytes_and_names(tmp_path: Path) -> None:
    first = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(first)

    def fingerprint(paths: list[Path]) -> str:
        return decode_files(paths, skip_bad=False, root=tmp_path, description="t")[3]

    before = fingerprint([first])
    assert fingerprint([first]) == before
    renamed = first.rename(tmp_path / "b.png")
    assert fingerprint([renamed]) != before
    Image.fromarray(np.ones((4, 4), np.uint8)).save(tmp_path / "a.png")
    assert fingerprint([tmp_path / "a.png"]) != before


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".tiff"])
def test_decode_file_all_listed_suffixes(tmp_path: Path, suffix: str) -> None:
    assert suffix in IMAGE_SUFFIXES
    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / f"x{suffix}")
    np.testing.assert_array_equal(read_image(tmp_path / f"x{suffix}"), rgb)


def test_decode_file_palette_png(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P")
    palette.save(tmp_path / "p.png")
    image = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(image, np.asarray(palette.convert("RGB")))


def test_decode_file_16bit_png_is_uint8(tmp_path: Path) -> None:
    Image.fromarray((np.arange(20).reshape(4, 5) * 3000).astype(np.uint16)).save(tmp_path / "g16.png")
    assert read_image(tmp_path / "g16.png").dtype == np.uint8


# --------------------------------------------------------------------------- imagefolder


def test_imagefolder_source(folder: Path) -> None:
    source = load_source(f"imagefolder:{folder}")
    assert source.classes == ["cat", "dog"]
    assert sorted(source.splits) == ["test", "train"]
    for split in ("train", "test"):
        assert source.splits[split].labels.tolist() == [0] * 6 + [1] * 6
        shapes = [image.shape for image in source.splits[split].images]
        assert shapes[0] == (12, 9) and shapes[6] == (12, 9)  # 0.jpg is grayscale
        assert shapes[1] == (13, 11, 3) and shapes[5] == (17, 19, 3)
    assert source.fingerprint is None  # files are hashed when they are decoded
    first = build_dataset(DataConfig(dataset=f"imagefolder:{folder}", image_size=8))
    assert first.manifest["source_sha256"] == build_dataset(
        DataConfig(dataset=f"imagefolder:{folder}", image_size=8)).manifest["source_sha256"]


def test_imagefolder_mixed_images_resize_to_rgb(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "ds")
    # first file read is RGB; the dog folder still starts with a grayscale image
    rgb = np.random.default_rng(3).integers(0, 256, (10, 14, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "train" / "cat" / "0.jpg")
    data = build_dataset(DataConfig(dataset=f"imagefolder:{root}", image_size=8, channels="auto"))
    assert data.channels == 3 and data.image_size == 8
    assert {s: data.sources[s].images.shape for s in SPLITS} == {"train": (10, 8, 8, 3), "val": (2, 8, 8, 3),
                                                   "test": (12, 8, 8, 3)}
    files = split_files(root, "test")
    for i, path in enumerate(files):
        np.testing.assert_array_equal(data.sources["test"].images[i], prepare_image(read_image(path), 8, 3))
    gray = data.sources["test"].images[0]  # test/cat/0.jpg is grayscale: its channels are equal
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert not (data.sources["test"].images[1][..., 0] == data.sources["test"].images[1][..., 1]).all()
    assert data.sources["test"].labels.tolist() == [0] * 6 + [1] * 6
    assert data.manifest["classes"] == ["cat", "dog"] and data.manifest["bad_files"] == []


def test_imagefolder_auto_channels_with_grayscale_first_image(folder: Path) -> None:
    data = build_dataset(DataConfig(dataset=f"imagefolder:{folder}", image_size=8, channels="auto"))
    assert data.channels == 3


def test_imagefolder_one_channel(folder: Path) -> None:
    data = build_dataset(DataConfig(dataset=f"imagefolder:{folder}", image_size=8, channels="1"))
    assert data.sources["test"].images.shape == (12, 8, 8, 1) and data.sources["train"].images.shape == (10, 8, 8, 1)
    files = split_files(folder, "test")
    np.testing.assert_array_equal(data.sources["test"].images[3], prepare_image(read_image(files[3]), 8, 1))


def test_imagefolder_classes_sorted_and_hidden_ignored(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "ds", classes=("zebra", "ant", "mole"), per_class=2)
    for split in ("train", "test"):
        (root / split / ".cache").mkdir()
        garbage(root / split / ".cache" / "x.png")
        garbage(root / split / "ant" / ".hidden.png")
        (root / split / "ant" / "notes.txt").write_text("not an image")
    nested = root / "train" / "mole" / "more"
    nested.mkdir()
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(nested / "deep.PNG")
    source = load_source(f"imagefolder:{root}")
    assert source.classes == ["ant", "mole", "zebra"]
    assert source.splits["train"].labels.tolist() == [0, 0, 1, 1, 1, 2, 2]  # nested image counted
    assert source.splits["test"].labels.tolist() == [0, 0, 1, 1, 2, 2]
    listed = [path for split in source.splits.values() for path in split.images.paths]
    assert not any(path.name.startswith(".") or ".cache" in path.parts or path.suffix == ".txt" for path in listed)


def test_imagefolder_corrupt_image_one_error(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "ds")
    bad = [garbage(root / "train" / "cat" / "2.jpg"), garbage(root / "test" / "dog" / "9.jpg")]
    load_source(f"imagefolder:{root}")  # listing reads no pixels
    with pytest.raises(DhaError, match=r"2 unreadable image\(s\)") as info:
        build_dataset(DataConfig(dataset=f"imagefolder:{root}", image_size=8))
    for path in bad:  # one error names every unreadable file, whichever split it fell into
        assert str(path) in str(info.value)


def test_imagefolder_skip_bad(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "ds")
    bad_train = garbage(root / "train" / "dog" / "3.png")
    bad_test = garbage(root / "test" / "cat" / "4.jpg")
    data = build_dataset(DataConfig(dataset=f"imagefolder:{root}", image_size=8, channels="3", skip_bad=True))
    assert data.manifest["bad_files"] == [str(bad_train), str(bad_test)]
    assert len(data.sources["train"].labels) + len(data.sources["val"].labels) == 11
    assert data.manifest["counts"]["test"] == [5, 6]
    kept = [p for p in split_files(root, "test") if p != bad_test]
    for i, path in enumerate(kept):  # labels stay aligned with the images that were kept
        np.testing.assert_array_equal(data.sources["test"].images[i], prepare_image(read_image(path), 8, 3))
    assert data.sources["test"].labels.tolist() == [0] * 5 + [1] * 6


def test_imagefolder_all_bad_in_a_split(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "ds", per_class=2, splits=("train", "val", "test"))
    for path in split_files(root, "test"):
        garbage(path)
    with pytest.raises(DhaError, match="no readable images") as info:
        build_dataset(DataConfig(dataset=f"imagefolder:{root}", image_size=8, skip_bad=True))
    assert str(root / "test") in str(info.value)


def test_imagefolder_empty_class_folder(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "ds")
    (root / "train" / "empty").mkdir()
    (root / "train" / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DhaError, match="holds no images") as info:
        load_source(f"imagefolder:{root}")
    assert str(root / "train" / "empty") in str(info.value)


def test_imagefolder_class_sets_differ(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "ds")
    (root / "test" / "bird").mkdir()
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(root / "test" / "bird" / "0.png")
    with pytest.raises(DhaError, match="differ from train") as info:
        load_source(f"imagefolder:{root}")
    assert "extra ['bird']" in str(info.value) and "missing []" in str(info.value)
    assert str(root / "test") in str(info.value)


def test_imagefolder_class_missing_in_test(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "ds", classes=("cat", "dog"), splits=("train",))
    make_imagefolder(tmp_path / "ds", classes=("cat",), splits=("test",))
    with pytest.raises(DhaError, match=r"differ from train: extra \[\], missing \['dog'\]"):
        load_source(f"imagefolder:{root}")


def test_imagefolder_layouts_people_have(tmp_path: Path) -> None:
    """train/ alone (test carved), one folder of class folders (test and val carved, stratified, the same on every
    build), held-out folders only (not trainable), and the errors: no folder, images directly under it."""
    train_only = make_imagefolder(tmp_path / "train_only", splits=("train",), per_class=8)
    data = build_dataset(DataConfig(dataset=f"imagefolder:{train_only}", image_size=8, test_fraction=0.25))
    assert data.manifest["split"]["given"] == ["train"] and data.manifest["counts"]["test"] == [2, 2]

    flat = make_imagefolder(tmp_path / "flat", splits=("all",), per_class=8) / "all"  # flat/<class>/*
    config = DataConfig(dataset=f"imagefolder:{flat}", image_size=8, test_fraction=0.25, val_fraction=0.16)
    first, again = build_dataset(config), build_dataset(config)
    assert first.classes == ["cat", "dog"] and first.manifest["split"]["given"] == ["train"]
    assert first.manifest["counts"] == {"train": [5, 5], "val": [1, 1], "test": [2, 2]}
    assert first.manifest["split"]["test_fraction"] == 0.25, "the split's settings are recorded with it"
    for split in SPLITS:
        np.testing.assert_array_equal(first.sources[split].images, again.sources[split].images)

    held_out = make_imagefolder(tmp_path / "held_out", classes=("dog",), splits=("test",))
    source = load_source(f"imagefolder:{held_out}")
    assert sorted(source.splits) == ["test"] and source.classes == ["dog"]
    with pytest.raises(DhaError, match="can be evaluated, not trained on"):
        build_dataset(DataConfig(dataset=f"imagefolder:{held_out}", image_size=8))

    with pytest.raises(DhaError, match="is not a directory"):
        load_source(f"imagefolder:{tmp_path / 'nowhere'}")
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(loose / "0.png")
    with pytest.raises(DhaError, match=r"has images directly in it \(0.png, ...\): a class is a folder") as info:
        load_source(f"imagefolder:{loose}")
    assert "PATH/<class>/*" in str(info.value) and "PATH/train/<class>/*" in str(info.value)
    (train_only / "test").mkdir()
    with pytest.raises(DhaError, match="has no class folders") as info:
        load_source(f"imagefolder:{train_only}")
    assert str(train_only / "test") in str(info.value)


def test_imagefolder_val_folder_used(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "ds", splits=("train", "val", "test"), per_class=3)
    data = build_dataset(DataConfig(dataset=f"imagefolder:{root}", image_size=8, channels="3"))
    assert {s: len(data.sources[s].labels) for s in SPLITS} == {"train": 6, "val": 6, "test": 6}  # nothing carved
    assert data.manifest["split"]["given"] == ["test", "train", "val"]
    for i, path in enumerate(split_files(root, "val")):
        np.testing.assert_array_equal(data.sources["val"].images[i], prepare_image(read_image(path), 8, 3))


# --------------------------------------------------------------------------- imagenet


def test_imagenet_val_is_test(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "inet", classes=("n01", "n02"), splits=("train", "val"))
    source = load_source(f"imagenet:{root}")
    assert sorted(source.splits) == ["test", "train"]
    assert source.classes == ["n01", "n02"]
    data = build_dataset(DataConfig(dataset=f"imagenet:{root}", image_size=8, channels="3"))
    counts = {s: len(data.sources[s].labels) for s in SPLITS}
    assert counts == {"train": 10, "val": 2, "test": 12}  # val carved from train
    for i, path in enumerate(split_files(root, "val")):
        np.testing.assert_array_equal(data.sources["test"].images[i], prepare_image(read_image(path), 8, 3))
    assert data.manifest["split"]["given"] == ["test", "train"]


def test_imagenet_missing_val(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "inet", splits=("train", "test"))
    with pytest.raises(DhaError, match="has no 'val/' folder"):
        load_source(f"imagenet:{root}")


# --------------------------------------------------------------------------- cache


def test_cache_round_trip(tmp_path: Path, digits_data: PreparedData) -> None:
    manifest_path = save_cache(digits_data, tmp_path / "cache")
    assert manifest_path == tmp_path / "cache" / MANIFEST
    written = json.loads(manifest_path.read_text())
    assert sorted(written["files"]) == sorted(f"{s}_{k}.npy" for s in SPLITS for k in "xy")
    for name, digest in written["files"].items():
        assert hashlib.sha256((tmp_path / "cache" / name).read_bytes()).hexdigest() == digest
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no temp files left
    loaded = load_cache(tmp_path / "cache")
    assert loaded.classes == digits_data.classes
    assert loaded.mean == digits_data.mean and loaded.std == digits_data.std
    assert {k: v for k, v in loaded.manifest.items() if k != "files"} == digits_data.manifest
    for split in SPLITS:
        np.testing.assert_array_equal(loaded.sources[split].images, digits_data.sources[split].images)
        np.testing.assert_array_equal(loaded.sources[split].labels, digits_data.sources[split].labels)
        assert loaded.sources[split].images.dtype == np.uint8 and loaded.sources[split].labels.dtype == np.int64
    assert loaded.channels == 1 and loaded.image_size == 8


@pytest.mark.parametrize("name", ["train_x.npy", "test_y.npy"])
@pytest.mark.parametrize("offset", [-1, 200])
def test_cache_tampered_file(tmp_path: Path, digits_data: PreparedData, name: str, offset: int) -> None:
    save_cache(digits_data, tmp_path)
    flip_byte(tmp_path / name, offset)
    with pytest.raises(DhaError, match="corrupt") as info:
        load_cache(tmp_path)
    assert name in str(info.value)


def test_cache_missing_file(tmp_path: Path, digits_data: PreparedData) -> None:
    save_cache(digits_data, tmp_path)
    (tmp_path / "val_x.npy").unlink()
    with pytest.raises(DhaError, match="missing or corrupt") as info:
        load_cache(tmp_path)
    assert "val_x.npy" in str(info.value)


def test_cache_missing_manifest(tmp_path: Path, digits_data: PreparedData) -> None:
    with pytest.raises(DhaError, match="no dataset cache"):
        load_cache(tmp_path / "never-written")
    save_cache(digits_data, tmp_path)
    (tmp_path / MANIFEST).unlink()
    with pytest.raises(DhaError, match="no dataset cache") as info:
        load_cache(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_cache_old_format(tmp_path: Path, digits_data: PreparedData) -> None:
    save_cache(digits_data, tmp_path)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    manifest["format"] = CACHE_FORMAT - 1
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DhaError, match="unreadable or old manifest"):
        load_cache(tmp_path)


def test_cache_garbled_manifest(tmp_path: Path, digits_data: PreparedData) -> None:
    save_cache(digits_data, tmp_path)
    text = (tmp_path / MANIFEST).read_text()
    (tmp_path / MANIFEST).write_text(text[: len(text) // 2])
    with pytest.raises(DhaError):
        load_cache(tmp_path)


@pytest.mark.parametrize("kind", ["cifar10", "cifar100", "flowers102"])
def test_torchvision_sets_missing_root_names_download_flag(tmp_path: Path, kind: str) -> None:
    with pytest.raises(DhaError) as info:
        load_source(f"{kind}:{tmp_path / 'nothing'}")
    assert "not found" in str(info.value) and "data.download=true" in str(info.value)
