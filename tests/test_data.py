"""The three data sources, the decode-once cache, the fingerprint, and every bad-input error."""

from pathlib import Path

import numpy as np
import pytest

from beanlib import data as data_module
from beanlib.config import CLASS_NAMES
from beanlib.data import BEANS_COUNTS, SPLITS, load_beans
from beanlib.errors import BeanlibError


def _forget_memo():
    data_module._MEMO.clear()


@pytest.mark.slow
def test_synthetic_mirrors_the_beans_splits_and_is_seeded():
    full = load_beans("synthetic", 32)
    for split in SPLITS:
        assert full.counts()[split] == list(BEANS_COUNTS[split])
        assert full.split(split).images.dtype == np.uint8 and full.split(split).images.shape[1:] == (32, 32, 3)
    again = load_beans("synthetic", 32, cache_dir="/nonexistent-never-used")  # memo: same object, no rebuild
    assert again is full
    other_seed = load_beans("synthetic", 32, per_class=4, seed=1)
    same_seed = load_beans("synthetic", 32, per_class=4, seed=0)
    assert other_seed.fingerprint != same_seed.fingerprint
    # per_class keeps the first n of each class: the same images as the full set's first ones
    np.testing.assert_array_equal(same_seed.train.images[:4], full.train.images[:4])


def test_synthetic_classes_differ_where_the_diseases_do():
    d = load_beans("synthetic", 64, per_class=20)
    images, labels = d.train.images.astype(float), d.train.labels
    # rust pustules carry yellow halos: more yellow-ish pixels (red and green high, blue low) than healthy leaves
    yellow = ((images[..., 0] > 150) & (images[..., 1] > 140) & (images[..., 2] < 110)).mean(axis=(1, 2))
    assert yellow[labels == 1].mean() > 3 * yellow[labels == 2].mean()


def test_prepared_data_is_cached_on_disk_and_never_decoded_twice(tmp_path, monkeypatch):
    first = load_beans("synthetic", 40, per_class=3, cache_dir=tmp_path)
    assert len(list((tmp_path / "data").glob("*.npz"))) == 1
    _forget_memo()
    monkeypatch.setattr(data_module.synthetic, "generate", lambda *a: pytest.fail("regenerated instead of cached"))
    second = load_beans("synthetic", 40, per_class=3, cache_dir=tmp_path)
    assert second.fingerprint == first.fingerprint
    np.testing.assert_array_equal(second.test.images, first.test.images)


def test_a_truncated_cache_file_is_rebuilt(tmp_path):
    first = load_beans("synthetic", 36, per_class=2, cache_dir=tmp_path)
    (cached,) = (tmp_path / "data").glob("*.npz")
    cached.write_bytes(cached.read_bytes()[:100])
    _forget_memo()
    assert load_beans("synthetic", 36, per_class=2, cache_dir=tmp_path).fingerprint == first.fingerprint


def test_real_beans_folder_is_read_in_place(beans_dir):
    d = load_beans(str(beans_dir), 48, per_class=4)
    assert d.counts() == {s: [4, 4, 4] for s in SPLITS}
    assert d.train.images.shape == (12, 48, 48, 3) and d.train.images.dtype == np.uint8
    assert d.train.images.std() > 20  # real photos, not blank
    names, files, carved = data_module._scan_folder(beans_dir)
    assert carved is None  # beans has its own splits
    assert names == CLASS_NAMES == d.class_names  # sorted folder names: TFDS's label order
    assert {s: [len(c) for c in files[s]] for s in SPLITS} == {s: list(n) for s, n in BEANS_COUNTS.items()}


@pytest.mark.slow
def test_real_beans_keep_the_fingerprint_their_committed_runs_recorded(beans_dir):
    """Reading any dataset changed how folders are read; beans' content identity (and so every run's match) did not."""
    import json

    recorded = json.loads((Path(__file__).resolve().parents[1] / "results" / "seed-128" / "run.json").read_text())
    assert load_beans(str(beans_dir), 128).fingerprint == recorded["data_fingerprints"]["128"]


def test_tfds_source_on_mock_data(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(data_module, "tfds_splits", lambda builder: list(SPLITS))  # mock data has no split metadata
    with tfds.testing.mock_data(num_examples=15):
        d = load_beans("tfds", 32, per_class=2, tfds_data_dir="/tmp/beanlib-mock-tfds")
    assert all(d.split(s).images.shape == (len(d.split(s)), 32, 32, 3) for s in SPLITS)
    assert set(np.concatenate([d.split(s).labels for s in SPLITS])) <= {0, 1, 2}
    assert max(max(c) for c in d.counts().values()) <= 2 and len(d.fingerprint) == 16


def test_tfds_without_network_says_how_to_use_a_local_folder(monkeypatch):
    import requests
    import tensorflow_datasets as tfds

    def offline(self, *args, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to resolve 'storage.googleapis.com'")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(BeanlibError, match=r"could not download the TFDS 'beans' dataset .*--data") as caught:
        load_beans("tfds", 32, tfds_data_dir="/tmp/beanlib-offline-tfds")
    assert "\n" not in str(caught.value)


# --- bad folders ---------------------------------------------------------------------------------


def test_a_small_good_folder_loads(jpeg_folder, tmp_path):
    d = load_beans(str(jpeg_folder), 16, cache_dir=tmp_path / "cache")
    assert d.counts() == {s: [1, 1, 1] for s in SPLITS}
    np.testing.assert_array_equal(d.train.labels, [0, 1, 2])


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda root: root.rename(root.with_name("gone")), r"data folder .*beans does not exist"),
        (lambda root: _rmtree(root / "validation"), r"has no 'validation' split folder"),
        (lambda root: (root / "train" / "powdery_mildew").mkdir(),
         r"class folders differ between splits of .*: only in train: powdery_mildew; only in validation: none: give every split"),
        (lambda root: _rmtree(root / "test" / "healthy"), r"class folders differ .*only in train: healthy; only in test: none"),
        (lambda root: (root / "train" / "bean_rust" / "bean_rust_train.0.jpg").unlink(),
         r"train/bean_rust holds no images: add some, or remove the class from every split"),
        (lambda root: [_rmtree(root / s / c) for s in SPLITS for c in CLASS_NAMES[1:]],
         r"has 1 class folder \(angular_leaf_spot\): a classifier needs at least 2"),
        (lambda root: (root / "test" / "healthy" / "notes.txt").write_text("not an image"),
         r"^1 file could not be read as an image \(.*test/healthy/notes.txt\): replace or remove them$"),
        (lambda root: [(root / "train" / "healthy" / f"cut{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated") for i in range(7)],
         r"^7 files could not be read as an image \(.*cut0.jpg, .*cut4.jpg and 2 more\)"),
    ],
)
def test_bad_folders_get_a_one_line_error_naming_the_problem(jpeg_folder, tmp_path, breakage, message):
    root = jpeg_folder
    breakage(root)
    with pytest.raises(BeanlibError, match=message) as caught:
        load_beans(str(root), 16, cache_dir=tmp_path / "cache")
    assert "\n" not in str(caught.value)
    assert not list((tmp_path / "cache").glob("**/*.npz"))  # nothing half-prepared is left behind


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


def test_bad_arguments_are_refused():
    with pytest.raises(BeanlibError, match="per_class must be a positive integer"):
        load_beans("synthetic", 32, per_class=0)
    with pytest.raises(BeanlibError, match="image_size must be a positive integer"):
        load_beans("synthetic", 0)


# --- any labelled image folder -------------------------------------------------------------------


def test_any_folder_of_labelled_images_loads_with_its_class_names_in_sorted_order(five_classes, tmp_path):
    d = load_beans(str(five_classes), 16, cache_dir=tmp_path / "cache")
    assert d.class_names == ("circle", "leaf", "moon", "square", "star") and d.num_classes == 5
    assert d.counts() == {s: [2] * 5 for s in SPLITS}
    assert d.train.images.shape == (10, 16, 16, 3) and d.train.images.dtype == np.uint8
    # every mode became RGB: a palette image keeps its colour, a gray one is gray in all three channels
    circle = d.train.images[d.train.labels == 0]  # "circle": red, written as RGB and as a palette PNG
    assert (np.abs(circle[:, 8, 8].astype(int) - (200, 30, 30)) <= 2).all()
    moon = d.train.images[d.train.labels == 2]  # "moon": written as gray (c.png) and as RGBA (d.png)
    assert moon[0, 8, 8, 0] == moon[0, 8, 8, 1] == moon[0, 8, 8, 2] == 143  # the gray value, in all three channels
    assert (np.abs(moon[1, 8, 8].astype(int) - (200, 200, 30)) <= 2).all()
    assert data_module.class_names(str(five_classes)) == d.class_names  # without decoding anything
    beans_like = load_beans("synthetic", 16, per_class=1)
    assert beans_like.class_names == CLASS_NAMES


def test_a_folder_without_splits_is_split_per_class_seeded_and_recorded(five_classes_unsplit, tmp_path):
    d = load_beans(str(five_classes_unsplit), 16, cache_dir=tmp_path / "cache")
    assert d.class_names == ("circle", "leaf", "moon", "square", "star")
    assert d.counts() == {"train": [4] * 5, "validation": [1] * 5, "test": [1] * 5}  # 6 per class: 10% each, at least 1
    rows = {(item, cls): split for item, cls, split in d.carved}
    assert len(rows) == 30 and all(item.startswith(cls + "/") for item, cls in rows)
    data_module._MEMO.clear()
    again = load_beans(str(five_classes_unsplit), 16, cache_dir=tmp_path / "other-cache")  # decoded afresh
    assert again.carved == d.carved and again.fingerprint == d.fingerprint  # the same files always split the same way


def test_a_folder_without_splits_needs_three_images_per_class(five_classes_unsplit, tmp_path):
    for extra in sorted((five_classes_unsplit / "star").iterdir())[2:]:
        extra.unlink()
    with pytest.raises(BeanlibError, match=r"class folder .*star holds 2 images: splitting needs at least 3"):
        load_beans(str(five_classes_unsplit), 16, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("name, has, classes", [
    ("tf_flowers", ["train"], ("dandelion", "daisy", "tulips", "sunflowers", "roses")),
    ("rock_paper_scissors", ["train", "test"], ("rock", "paper", "scissors")),
])
def test_a_tfds_dataset_keeps_its_splits_and_carves_the_missing_ones_from_train(monkeypatch, tmp_path, name, has, classes):
    """Any TFDS image-classification dataset (mock data: no network here): its label names, its own splits, a missing
    validation or test split carved from train per class and recorded by index."""
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(data_module, "tfds_splits", lambda builder: has)
    with tfds.testing.mock_data(num_examples=40):
        d = load_beans(f"tfds:{name}", 24, tfds_data_dir=str(tmp_path / "tfds"), cache_dir=tmp_path / "cache")
    assert d.class_names == classes and d.train.images.shape[1:] == (24, 24, 3)
    carved = {split for _, _, split in d.carved}
    assert carved == {"train", *(s for s in SPLITS if s not in has)}  # only the missing splits are made
    assert all(item.startswith("train[") for item, _, _ in d.carved) and len(d.carved) == 40  # every train example, once
    if "test" in has:
        assert len(d.test) == 40  # the dataset's own test split, untouched
    assert len(d.train) + sum(len(d.split(s)) for s in SPLITS if s not in has and s != "train") == 40


def test_an_unknown_tfds_dataset_is_one_line():
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(BeanlibError, match=r"TFDS has no dataset 'no_such_beans' .*: pass --data tfds:NAME"):
        load_beans("tfds:no_such_beans", 24)
