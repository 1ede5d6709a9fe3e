"""Shared test setup: a private cache per session, quiet TensorFlow, and the real beans folder when present."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from clusters import embedded_ray

# Before anything imports TensorFlow: quiet logs, and a cache that tests share but users never see.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["BEANLIB_CACHE"] = tempfile.mkdtemp(prefix="beanlib-test-cache-")
atexit.register(shutil.rmtree, os.environ["BEANLIB_CACHE"], ignore_errors=True)


# What several tests share and costs a sweep, a cluster or minutes of training to build (session-scoped, built once
# per process; the cluster module-scoped, stopped once its one module is done). The tests that use one run on the
# same xdist worker, one after another (pyproject's `--dist loadgroup`), so that the suite on two workers builds
# each once, as it does in one process.
BUILT_ONCE = ("token_cluster", "smoke_run", "resumed_and_clean", "null_population", "inception_299", "beans128")


def pytest_itemcollected(item):
    """Group a test by the first BUILT_ONCE fixture it uses (as it is collected: before xdist reads the groups)."""
    shared = [name for name in BUILT_ONCE if name in getattr(item, "fixturenames", ())]
    if shared:
        item.add_marker(pytest.mark.xdist_group(shared[0]))


def pytest_collection_modifyitems(items):
    """The slow tests first: workers hand out tests in this order, so the short ones even out the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_configure(config):
    """Refuse workers that would not group: xdist marks a group in the test's id, which pytest 9.2 no longer lets it
    do (pytest-xdist#1386), and then each worker would build again what BUILT_ONCE names."""
    if config.getvalue("dist") == "loadgroup" and tuple(map(int, pytest.__version__.split(".")[:2])) >= (9, 2):
        raise pytest.UsageError(f"pytest {pytest.__version__} breaks xdist's groups: install pytest<9.2, as "
                                "pyproject.toml pins it, or run in one process with -n 0")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The README's main job killed mid-sweep and run again to the end (tests/smoke.py), for the tests of both."""
    from smoke import killed_and_resumed

    return killed_and_resumed(tmp_path_factory.mktemp("killed"))


@pytest.fixture
def local_ray():
    """An embedded Ray in this process for the test's sweeps (see `embedded_ray`)."""
    return embedded_ray()


@pytest.fixture
def no_local_ray():
    """No Ray in this process: for a sweep that must connect to a cluster of its own."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()


@pytest.fixture(scope="session", autouse=True)
def _ray_shut_down_at_the_end():
    yield
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()


@pytest.fixture(scope="session")
def beans_dir() -> Path:
    """The real beans folder named by $BEANS_DIR; the test is skipped when it is not there."""
    value = os.environ.get("BEANS_DIR")
    if not value:
        pytest.skip("BEANS_DIR is not set: point it at a copy of the beans folder (split/class/*.jpg) to run this test")
    path = Path(value)
    if not (path / "train").is_dir():
        pytest.skip(f"BEANS_DIR={value} holds no beans folder (split/class/*.jpg): real-data test skipped")
    return path


@pytest.fixture(scope="session")
def tiny_synthetic():
    """Synthetic beans at 32px, 6 images per class per split: enough to train LeNet for a step."""
    from beanlib.data import load_beans

    return load_beans("synthetic", 32, per_class=6)


@pytest.fixture(scope="session")
def pretrained_weights() -> Path:
    """The pretrained Inception-v3 no-top weights file named by $INCEPTION_WEIGHTS; skipped when absent."""
    value = os.environ.get("INCEPTION_WEIGHTS")
    if not value:
        pytest.skip("INCEPTION_WEIGHTS is not set: point it at a Keras Inception-v3 no-top .weights.h5 file to run this test")
    if not Path(value).is_file():
        pytest.skip(f"INCEPTION_WEIGHTS={value} is not a file: pretrained-base test skipped")
    return Path(value)


@pytest.fixture
def jpeg_folder(tmp_path) -> Path:
    """A tiny beans folder of real JPEGs at tmp_path/beans: one 20x20 noise image per class per split."""
    import numpy as np
    import tensorflow as tf

    from beanlib.config import CLASS_NAMES
    from beanlib.data import SPLITS

    root = tmp_path / "beans"
    for split in SPLITS:
        for i, name in enumerate(CLASS_NAMES):
            path = root / split / name / f"{name}_{split}.0.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(tf.io.encode_jpeg(np.random.default_rng(i).integers(0, 255, (20, 20, 3), dtype=np.uint8)).numpy())
    return root


def _image(path: Path, pixels) -> None:
    """Write `pixels` (HxW gray, HxWx3 RGB or HxWx4 RGBA) as PNG, or as a palette PNG when the name ends in .p.png."""
    from PIL import Image

    image = Image.fromarray(pixels)
    (image.convert("P", palette=Image.Palette.ADAPTIVE) if path.name.endswith(".p.png") else image).save(path, format="PNG")


@pytest.fixture
def five_classes(tmp_path) -> Path:
    """Five classes of flat-coloured images, two per class per split, in every mode: RGB, gray, RGBA, palette PNGs."""
    root = tmp_path / "shapes"
    import numpy as np

    from beanlib.data import SPLITS

    colours = {"circle": (200, 30, 30), "square": (30, 200, 30), "star": (30, 30, 200), "moon": (200, 200, 30), "leaf": (30, 200, 200)}
    for split in SPLITS:
        for c, (name, colour) in enumerate(colours.items()):
            folder = root / split / name
            folder.mkdir(parents=True)
            rgb = np.full((24, 30, 3), colour, np.uint8)
            modes = [("a.png", rgb), ("b.p.png", rgb), ("c.png", rgb.mean(-1).astype(np.uint8)),
                     ("d.png", np.dstack([rgb, np.full((24, 30), 255, np.uint8)]))]
            for file_name, pixels in modes[c % 2 * 2: c % 2 * 2 + 2]:  # two modes per class, all four across classes
                _image(folder / file_name, pixels)
    return root


@pytest.fixture
def five_classes_unsplit(five_classes) -> Path:
    """The same images as `five_classes`, without split folders: CLASS/SPLIT-FILE (six per class)."""
    root = five_classes.with_name("shapes-unsplit")
    for path in sorted(five_classes.glob("*/*/*")):
        split, name = path.parts[-3], path.parts[-2]
        (root / name).mkdir(parents=True, exist_ok=True)
        path.rename(root / name / f"{split}-{path.name}")
    return root
