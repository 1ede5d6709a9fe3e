"""A labelled image dataset's splits as uint8 arrays at a requested size: beans from TFDS, any local folder of
labelled images, or the synthetic beans generator.

`load_beans(source, image_size)` decodes and resizes every image once per
(source, size, subsample) and keeps the result in an in-process memo and in an
on-disk cache (`beanlib.cache`: `$BEANLIB_CACHE`, default `~/.cache/beanlib`), so no epoch and
no trial ever decodes a JPEG again. Each prepared dataset carries a content
fingerprint (a hash of its pixels and labels) that goes into every result.

Sources (the `source` argument, or `--data` on the command line):
- `"tfds"`: the real TFDS `beans` dataset; downloads on first use into the TFDS
  data dir (`tfds_data_dir`, else `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`).
- a folder path laid out as `split/class/*` (the official beans archives' layout, e.g.
  an offline copy, or any dataset's: two or more class folders, the same in every
  split, images in any format TensorFlow decodes: JPEG, PNG, GIF, BMP), read in place;
  or as `class/*`, which is split for the user (CARVE_FRACTIONS). Labels follow the
  class folders' names in sorted order (beans: the TFDS order).
- `"synthetic"`: the seeded procedural stand-in of `beanlib.synthetic`.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from beanlib import synthetic
from beanlib.backend import decoder_tensorflow
from beanlib.cache import cache_path, read_npz, write_npz
from beanlib.config import CLASS_NAMES
from beanlib.errors import BeanlibError

SPLITS = ("train", "validation", "test")
# Images per class in TFDS beans 0.1.0; the synthetic source mirrors them.
BEANS_COUNTS = {"train": (345, 348, 341), "validation": (44, 45, 44), "test": (43, 43, 42)}
CACHE_FORMAT = 1  # bump when the prepared arrays change meaning: it is part of every cache key
LAYOUT_HINT = "a folder laid out as split/class/* (train, validation and test, each with the same class folders of images)"


@dataclass(frozen=True)
class Split:
    """One split: images (N, S, S, 3) uint8 and labels (N,) int64, indices into the dataset's class names."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class BeansData:
    """The three prepared splits, where they came from, their content fingerprint, and the class names (label order)."""

    train: Split
    validation: Split
    test: Split
    image_size: int
    source: str
    fingerprint: str
    class_names: tuple[str, ...] = CLASS_NAMES
    carved: tuple | None = None  # the split beanlib made (source without one): (file or item, class, split) rows

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> Split:
        """The split called `name` (train, validation or test)."""
        return getattr(self, name)

    def counts(self) -> dict[str, list[int]]:
        """Images per class in each split."""
        return {s: np.bincount(self.split(s).labels, minlength=self.num_classes).tolist() for s in SPLITS}


@dataclass(frozen=True)
class _Source:
    """A data source resolved from the user's string: a cache identity, a reader, and its class names."""

    identity: str  # everything that determines the pixels, for the cache key
    # (image_size, per_class) -> (splits, the split beanlib made as (item, class, split) rows, or None)
    read: Callable[[int, int | None], tuple[dict[str, Split], tuple | None]]
    class_names: tuple[str, ...] = CLASS_NAMES
    per_class_counts: list[int] | None = None  # images per class over all splits, where known before reading


_MEMO: dict[str, BeansData] = {}


def load_beans(
    source: str = "tfds",
    image_size: int = 299,
    per_class: int | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    tfds_data_dir: str | None = None,
    seed: int = 0,
) -> BeansData:
    """The train/validation/test splits at `image_size`, prepared once and cached.

    `per_class` keeps the first n images of each class in each split (source
    order) for smoke runs and tests. `seed` only affects the synthetic source.
    """
    if not isinstance(image_size, int) or image_size < 1:
        raise BeanlibError(f"image_size must be a positive integer, got {image_size!r}")
    if per_class is not None and (not isinstance(per_class, int) or per_class < 1):
        raise BeanlibError(f"per_class must be a positive integer or None, got {per_class!r}")
    resolved = _resolve(source, tfds_data_dir, seed)
    key = hashlib.sha256(json.dumps([CACHE_FORMAT, resolved.identity, image_size, per_class]).encode()).hexdigest()[:24]
    if key in _MEMO:
        return _MEMO[key]
    path = cache_path("data", key, cache_dir)
    cached = read_npz(path)
    if cached is not None:
        splits = {s: Split(cached[f"{s}_images"], cached[f"{s}_labels"]) for s in SPLITS}
        stored = str(cached["fingerprint"])
        carved = tuple(map(tuple, json.loads(str(cached["carved"])))) if "carved" in cached else None
    else:
        splits, carved = resolved.read(image_size, per_class)
        stored = fingerprint(splits, resolved.class_names)
        arrays = {f"{s}_{k}": getattr(splits[s], k) for s in SPLITS for k in ("images", "labels")}
        write_npz(path, {"fingerprint": np.array(stored), **arrays, **({"carved": np.array(json.dumps(carved))} if carved else {})})
    _MEMO[key] = BeansData(**splits, image_size=image_size, source=source, fingerprint=stored, class_names=resolved.class_names,
                           carved=carved)
    return _MEMO[key]


def class_names(source: str, tfds_data_dir: str | None = None) -> tuple[str, ...]:
    """The class names of a data source in label order, without decoding any image (a folder's layout is checked)."""
    return _resolve(source, tfds_data_dir, 0).class_names


def decoded_bytes(source: str, image_size: int, per_class: int | None = None, tfds_data_dir: str | None = None) -> int | None:
    """What the decoded splits of `source` will take at `image_size` (uint8 RGB), before decoding any image; None
    where the source cannot tell without reading (TFDS before its download)."""
    counts = _resolve(source, tfds_data_dir, 0).per_class_counts
    if counts is None:
        return None
    images = sum(min(n, per_class * len(SPLITS)) if per_class else n for n in counts)
    return images * image_size * image_size * 3


def fingerprint(splits: dict[str, Split], names: tuple[str, ...] = CLASS_NAMES) -> str:
    """A short content hash of the pixels and labels of every split, and of the class names the labels index (only
    where they are not beans': beans' fingerprints are what they were before other datasets were read)."""
    digest = hashlib.sha256()
    if tuple(names) != CLASS_NAMES:
        digest.update(json.dumps(list(names)).encode())
    for name in SPLITS:
        split = splits[name]
        digest.update(f"{name}:{split.images.shape}".encode())
        digest.update(np.ascontiguousarray(split.images).data)
        digest.update(np.ascontiguousarray(split.labels, np.int64).data)
    return digest.hexdigest()[:16]


def resize_uint8(image, image_size: int) -> np.ndarray:
    """Resize one decoded HxWx3 image to SxS with antialiasing, back to uint8 (how every source resizes)."""
    tf = decoder_tensorflow()

    resized = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()


def _resolve(source: str, tfds_data_dir: str | None, seed: int) -> _Source:
    if not isinstance(source, str) or not source:
        raise BeanlibError(f"data source must be 'tfds', 'tfds:NAME', 'synthetic' or a folder path, got {source!r}")
    if source in NAMED_SOURCES:
        return NAMED_SOURCES[source](tfds_data_dir, seed)
    if source.startswith("tfds:"):
        return _tfds_source(tfds_data_dir, seed, source.partition(":")[2])
    return _folder_source(Path(source))


# --- TFDS -------------------------------------------------------------------------------------


def _tfds_source(data_dir: str | None, seed: int, name: str = "beans") -> _Source:
    """A TFDS image-classification dataset (`tfds` is beans): its own splits, a missing validation or test split
    carved from train (per class, seeded, recorded). Class names come from its label feature."""
    decoder_tensorflow()  # set up as this process wants it (a sweep's driver: no GPUs) before TFDS starts TensorFlow
    import tensorflow_datasets as tfds

    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError and friends
        raise BeanlibError(f"TFDS has no dataset {name!r} ({type(error).__name__}): pass --data tfds:NAME with a name from "
                           "the TFDS catalog, or a folder") from None
    if builder.info.supervised_keys is None or len(builder.info.supervised_keys) != 2:
        raise BeanlibError(f"TFDS dataset {name!r} has no (image, label) supervised keys: beanlib reads image classification datasets")
    names = tuple(builder.info.features[builder.info.supervised_keys[1]].names)
    if name == "beans" and names != CLASS_NAMES:
        raise BeanlibError(f"TFDS beans has labels {names}, expected {CLASS_NAMES}: use tensorflow-datasets 4.9.x")
    return _Source(f"tfds:{name}:{data_dir}", lambda size, per_class: _read_tfds(builder, size, per_class), names)


def tfds_splits(builder) -> list[str]:
    """The splits a prepared TFDS dataset has."""
    return list(builder.info.splits)


def _read_tfds(builder, image_size: int, per_class: int | None) -> tuple[dict[str, Split], tuple | None]:
    import tensorflow_datasets as tfds

    name = builder.info.name
    try:
        builder.download_and_prepare()
    except Exception as error:  # network errors come from requests, urllib3, tfds or grpc: all mean the same
        first_line = (str(error).splitlines() or [""])[0][:200]
        raise BeanlibError(
            f"could not download the TFDS {name!r} dataset ({type(error).__name__}: {first_line}); "
            f"without network, point --data (or BEANLIB_DATA) at a local copy: {LAYOUT_HINT}"
        ) from None
    present = [s for s in SPLITS if s in tfds_splits(builder)]
    if "train" not in present:
        raise BeanlibError(f"TFDS dataset {name!r} has no 'train' split (it has {', '.join(tfds_splits(builder))}): pass a folder instead")

    def examples(split: str) -> list[tuple[np.ndarray, int]]:
        return [(image, int(label)) for image, label in
                tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True, shuffle_files=False))]

    read = {split: examples(split) for split in present}
    carved = None
    missing = {split: CARVE_FRACTIONS[split] for split in SPLITS if split not in present}
    if missing:  # carve them from train, per class, seeded; train keeps the rest
        by_class: dict[int, list[int]] = {}
        for i, (_, label) in enumerate(read["train"]):
            by_class.setdefault(label, []).append(i)
        dealt = {label: _split_off(indices, missing, f"{name}:{label}") for label, indices in sorted(by_class.items())}
        train = read.pop("train")
        for split in [*missing, "train"]:
            read[split] = [train[i] for i in sorted(i for parts in dealt.values() for i in parts[split])]
        names = builder.info.features[builder.info.supervised_keys[1]].names
        carved = tuple((f"train[{i}]", names[label], split) for label, parts in dealt.items()
                       for split, indices in parts.items() for i in indices)
    splits = {split: _stack(((resize_uint8(_rgb(image), image_size), label)
                             for image, label in _first_per_class(read[split], per_class)), image_size) for split in SPLITS}
    return splits, carved


def _rgb(image: np.ndarray) -> np.ndarray:
    """HxWx3 from a gray (HxWx1) or RGBA (HxWx4) decoded image."""
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]


# --- a local folder in the official layout ----------------------------------------------------


def _folder_source(root: Path) -> _Source:
    names, files, carved = _scan_folder(root)
    listing = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for s in SPLITS for c in files[s] for p in c]
    identity = f"folder:{root.resolve()}:" + hashlib.sha256(json.dumps([names, listing]).encode()).hexdigest()
    counts = [sum(len(files[s][c]) for s in SPLITS) for c in range(len(names))]
    return _Source(identity, lambda size, per_class: (_read_folder(files, size, per_class), carved), names, counts)


# A folder without split folders (PATH/CLASS/*) is split for the user, per class (stratified): a shuffle of the
# class's sorted files, seeded by CARVE_SEED and the class name, sends these fractions (at least one image each) to
# validation and test and the rest to train. Ours; the same files always split the same way, and the sweep
# records which file went where in RUN/split.parquet.
CARVE_FRACTIONS = {"test": 0.1, "validation": 0.1}
CARVE_SEED = 0


def _scan_folder(root: Path) -> tuple[tuple[str, ...], dict[str, list[list[Path]]], tuple | None]:
    """Check the layout; the class names (sorted folder names), each split's image files per class (sorted), and,
    for a folder without splits, the split made for it as (file relative to root, class, split) rows."""
    if not root.is_dir():
        raise BeanlibError(f"data folder {root} does not exist: pass --data tfds, --data synthetic, or {LAYOUT_HINT}")
    if not any((root / split).is_dir() for split in SPLITS):
        return _carve(root)
    found = {}
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            raise BeanlibError(f"data folder {root} has no {split!r} split folder: expected {LAYOUT_HINT}, or no split "
                               "folders at all (PATH/CLASS/*) to have it split for you")
        found[split] = _class_folders(split_dir)
    names = tuple(found["train"])
    for split in SPLITS[1:]:
        if tuple(found[split]) != names:
            only = lambda a, b: ", ".join(sorted(set(found[a]) - set(found[b]))) or "none"  # noqa: E731
            raise BeanlibError(f"class folders differ between splits of {root}: only in train: {only('train', split)}; "
                               f"only in {split}: {only(split, 'train')}: give every split the same class folders")
    _enough_classes(root, names)
    return names, {split: [_images(root / split / name) for name in names] for split in SPLITS}, None


def _carve(root: Path):
    names = tuple(_class_folders(root))
    _enough_classes(root, names)
    files: dict[str, list[list[Path]]] = {split: [] for split in SPLITS}
    for name in names:
        images = _images(root / name)
        if len(images) < 3:
            raise BeanlibError(f"class folder {root / name} holds {len(images)} image{'s' if len(images) != 1 else ''}: "
                               "splitting needs at least 3 (one per split): add images, or give the folder split folders")
        for split, dealt in _split_off(images, CARVE_FRACTIONS, name).items():
            files[split].append(dealt)
    carved = tuple((str(p.relative_to(root)), name, split) for split in SPLITS for name, paths in zip(names, files[split]) for p in paths)
    return names, files, carved


def _split_off(items: list, fractions: dict[str, float], key: str) -> dict[str, list]:
    """One class's items (in a stable order) dealt to the splits in `fractions` (that share each, at least one) by a
    shuffle seeded from CARVE_SEED and `key`; the rest to train. Each split keeps the items' order."""
    order = np.random.default_rng([CARVE_SEED, int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)]).permutation(len(items))
    dealt, taken = {}, 0
    for split, fraction in fractions.items():
        n = max(1, round(fraction * len(items)))
        dealt[split] = [items[i] for i in sorted(order[taken:taken + n])]
        taken += n
    return {**dealt, "train": [items[i] for i in sorted(order[taken:])]}


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _enough_classes(root: Path, names: tuple[str, ...]) -> None:
    if len(names) < 2:
        raise BeanlibError(f"data folder {root} has {len(names)} class folder{'s' if len(names) != 1 else ''} "
                           f"({', '.join(names) or 'none'}): a classifier needs at least 2, {LAYOUT_HINT}")


def _images(folder: Path) -> list[Path]:
    """A class folder's files, sorted; a class without any is refused."""
    images = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not images:
        raise BeanlibError(f"class folder {folder} holds no images: add some, or remove the class from every split")
    return images


def _read_folder(files: dict[str, list[list[Path]]], image_size: int, per_class: int | None) -> dict[str, Split]:
    chosen = {split: [(path, label) for label, paths in enumerate(files[split]) for path in paths[:per_class]] for split in SPLITS}
    decoder_tensorflow()  # set up once here, not by the first threads below at the same time
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # TF's decode releases the GIL
        decoded = {split: list(pool.map(lambda item: decode_image(item[0], image_size), chosen[split])) for split in SPLITS}
    failed = [path for split in SPLITS for (path, _), image in zip(chosen[split], decoded[split]) if image is None]
    if failed:
        shown = ", ".join(str(p) for p in failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        raise BeanlibError(f"{len(failed)} file{'s' if len(failed) > 1 else ''} could not be read as an image ({shown}): "
                           "replace or remove them")
    return {split: _stack(zip(decoded[split], (label for _, label in chosen[split])), image_size) for split in SPLITS}


def decode_image(path: Path, image_size: int) -> np.ndarray | None:
    """One image file as SxSx3 uint8 RGB (grayscale, RGBA and palette images converted), or None when it is not one."""
    tf = decoder_tensorflow()

    try:
        image = tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
        return None
    return resize_uint8(image, image_size)


# --- synthetic ----------------------------------------------------------------------------------


def _synthetic_source(data_dir: str | None, seed: int) -> _Source:
    def read(image_size: int, per_class: int | None) -> tuple[dict[str, Split], None]:
        splits = {}
        for stream, name in enumerate(SPLITS):
            counts = tuple(min(n, per_class or n) for n in BEANS_COUNTS[name])
            splits[name] = Split(*synthetic.generate(counts, image_size, seed, stream))
        return splits, None

    counts = [sum(BEANS_COUNTS[s][c] for s in SPLITS) for c in range(len(CLASS_NAMES))]
    return _Source(f"synthetic:v{synthetic.GENERATOR_VERSION}:seed{seed}", read, CLASS_NAMES, counts)


NAMED_SOURCES: dict[str, Callable[[str | None, int], _Source]] = {
    "tfds": _tfds_source,  # beans
    "synthetic": _synthetic_source,
}


# --- helpers ------------------------------------------------------------------------------------


def _first_per_class(examples: Iterable[tuple[np.ndarray, int]], per_class: int | None):
    """Yield examples in order, at most `per_class` of each label."""
    seen: dict[int, int] = {}
    for image, label in examples:
        if per_class is None or seen.get(label, 0) < per_class:
            seen[label] = seen.get(label, 0) + 1
            yield image, label


def _stack(items: Iterable[tuple[np.ndarray, int]], image_size: int) -> Split:
    pairs = list(items)
    images = np.stack([img for img, _ in pairs]) if pairs else np.zeros((0, image_size, image_size, 3), np.uint8)
    return Split(images, np.array([label for _, label in pairs], np.int64))
