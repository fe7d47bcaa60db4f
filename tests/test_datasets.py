"""Offline datasets: digits, Fashion-MNIST (skips when absent) and the rendered-font characters."""

from __future__ import annotations

import os
import string
from pathlib import Path

import numpy as np
import pytest

from experiments import datasets
from experiments.datasets import Dataset, load_digits, load_fashion_mnist, load_fonts
from experiments.fonts import (
    CHARACTERS,
    FontFile,
    clone_group,
    discover_fonts,
    font_list_hash,
    render_font,
    split_by_family,
)
from experiments.fonts import FONT_CHARACTERS


def _check_dataset(d: Dataset, n_classes: int, side: int) -> None:
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.ndim == 2 and x.shape[1] == side * side and x.shape[0] == y.shape[0] > 0
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert 0 <= int(y.min()) and int(y.max()) < n_classes
    assert d.n_classes == n_classes and d.image_shape == (side, side)


def test_digits_split_is_stratified_and_seeded():
    d = load_digits()
    _check_dataset(d, 10, 8)
    assert len(d.x_train) + len(d.x_test) == 1797
    np.testing.assert_array_equal(d.y_train, load_digits().y_train)
    assert not np.array_equal(d.y_train, load_digits(seed=1).y_train)
    frac = np.bincount(d.y_test, minlength=10) / np.bincount(np.concatenate([d.y_train, d.y_test]), minlength=10)
    np.testing.assert_allclose(frac, 0.3, atol=0.02)


def test_fashion_mnist_limits():
    try:
        d = load_fashion_mnist(limit_train=500, limit_test=200)
    except FileNotFoundError:
        pytest.skip("dataset-fashion-mnist is not installed")
    _check_dataset(d, 10, 28)
    assert d.x_train.shape == (500, 784) and d.x_test.shape == (200, 784)


def test_fashion_mnist_missing_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"apt-get install dataset-fashion-mnist"):
        load_fashion_mnist()


# ---------------------------------------------------------------- font split (no fonts needed)
def _fake(path: str, family: str) -> FontFile:
    return FontFile(path=Path(path), family=family, style="Regular")


def test_clone_groups_and_family_words():
    assert clone_group("Liberation Sans") == clone_group("Arimo") == clone_group("Nimbus Sans") == clone_group("TeX Gyre Heros")
    assert clone_group("Liberation Serif") == clone_group("Tinos") == clone_group("Nimbus Roman")
    assert clone_group("DejaVu Sans Mono") == clone_group("DejaVu Serif")
    assert clone_group("Noto Sans") == clone_group("Noto Serif Display")
    assert clone_group("STIXGeneral") == clone_group("STIX Two Text")
    assert clone_group("Lato") != clone_group("Open Sans")


def test_split_by_family_is_disjoint_seeded_and_sized():
    families = ["Arimo", "Liberation Sans", "Lato", "Open Sans", "Noto Sans", "Noto Serif", "Hack", "Cantarell", "Go", "PT Sans"]
    fonts = [_fake(f"/f/{i:02d}-{s}.ttf", fam) for i, fam in enumerate(families) for s in ("a", "b")]
    sp = split_by_family(fonts, 0.25, seed=0)
    assert len(sp.train) + len(sp.test) == len(fonts)
    train_groups = {clone_group(f.family) for f in sp.train}
    test_groups = {clone_group(f.family) for f in sp.test}
    assert train_groups.isdisjoint(test_groups) and train_groups and test_groups
    assert len(sp.test) >= 0.25 * len(fonts)
    assert split_by_family(fonts, 0.25, seed=0) == sp
    assert any(split_by_family(fonts, 0.25, seed=s).test != sp.test for s in range(1, 6))


def test_split_by_family_rejects_bad_input():
    with pytest.raises(ValueError, match=r"test_fraction must lie in \(0, 1\); got 1.0"):
        split_by_family([_fake("/a.ttf", "Lato"), _fake("/b.ttf", "Hack")], 1.0, 0)
    with pytest.raises(ValueError, match=r"need fonts of at least 2 families to split by family; found 1 \(\['lato'\]\)"):
        split_by_family([_fake("/a.ttf", "Lato"), _fake("/b.ttf", "Lato Light")], 0.5, 0)


# ---------------------------------------------------------------- real fonts
@pytest.fixture(scope="module")
def installed_fonts() -> list[FontFile]:
    fonts = discover_fonts()
    if len({clone_group(f.family) for f in fonts}) < 3:
        pytest.skip("fewer than 3 font families installed (apt-get install the packages in .ci/apt-packages.txt)")
    return fonts


@pytest.fixture(scope="module")
def font_subset(installed_fonts, tmp_path_factory) -> Path:
    """A folder with links to 2 fonts of each of 4 families: a small, real font collection."""
    root = tmp_path_factory.mktemp("fonts")
    by_group: dict[str, list[FontFile]] = {}
    for f in installed_fonts:
        by_group.setdefault(clone_group(f.family), []).append(f)
    groups = sorted(by_group)[:4]
    for g in groups:
        for f in by_group[g][:2]:
            os.symlink(f.path, root / f"{g.replace(' ', '_')}-{f.path.name}")
    return root


def test_discovered_fonts_cover_all_characters(installed_fonts):
    from fontTools.ttLib import TTFont

    assert CHARACTERS == FONT_CHARACTERS == string.digits + string.ascii_uppercase + string.ascii_lowercase
    need = {ord(c) for c in CHARACTERS}
    for f in installed_fonts[:: max(1, len(installed_fonts) // 10)]:
        assert need <= set(TTFont(str(f.path), lazy=True).getBestCmap())
    assert not any("dingbat" in f.family.lower() or "symbol" in f.family.lower() for f in installed_fonts)
    assert len({(f.family, f.style) for f in installed_fonts}) == len(installed_fonts)


def test_render_font_centres_glyphs_and_keeps_case_size(installed_fonts):
    f = next(f for f in installed_fonts if f.style.lower() == "regular")
    img = render_font(f.path, 3, seed=0)
    assert img.dtype == np.uint8 and img.shape == (3 * 62, 28, 28)
    for g in img:
        rows, cols = np.flatnonzero(g.max(axis=1) > 20), np.flatnonzero(g.max(axis=0) > 20)
        assert rows.size and cols.size
        # bounding-box centre within the augmentation shift (1.5 px) plus rounding of the centre
        assert abs((rows[0] + rows[-1]) / 2 - 13.5) <= 2.5
        assert abs((cols[0] + cols[-1]) / 2 - 13.5) <= 2.5
    height = lambda g: np.ptp(np.flatnonzero(g.max(axis=1) > 20))  # noqa: E731
    for lower in "oxzsc":
        lo = np.mean([height(img[s * 62 + CHARACTERS.index(lower)]) for s in range(3)])
        up = np.mean([height(img[s * 62 + CHARACTERS.index(lower.upper())]) for s in range(3)])
        assert lo < up, (lower, lo, up)
    np.testing.assert_array_equal(img, render_font(f.path, 3, seed=0))
    assert not np.array_equal(img, render_font(f.path, 3, seed=1))


def test_render_font_rejects_bad_arguments(installed_fonts):
    with pytest.raises(ValueError, match=r"samples must be a positive integer; got 0"):
        render_font(installed_fonts[0].path, 0, 0)
    with pytest.raises(ValueError, match=r"image_size must be an integer >= 8; got 4"):
        render_font(installed_fonts[0].path, 1, 0, image_size=4)


def test_load_fonts_small_collection(font_subset, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "CACHE_DIR", tmp_path / "cache")
    d = load_fonts(samples_per_font=2, seed=3, test_fraction=0.25, font_dirs=[font_subset])
    _check_dataset(d, 62, 28)
    assert d.name == "fonts" and d.info["classes"] == FONT_CHARACTERS
    n_train, n_test = len(d.info["train_fonts"]), len(d.info["test_fonts"])
    assert n_train + n_test == 8 and n_test >= 2
    assert d.x_train.shape[0] == n_train * 62 * 2 and d.x_test.shape[0] == n_test * 62 * 2
    # every class equally often on each side
    assert set(np.bincount(d.y_train, minlength=62)) == {2 * n_train}
    assert set(np.bincount(d.y_test, minlength=62)) == {2 * n_test}
    # split by family: the group prefix of the link names never crosses sides
    prefix = lambda names: {n.split("-", 1)[0] for n in names}  # noqa: E731
    assert prefix(d.info["train_fonts"]).isdisjoint(prefix(d.info["test_fonts"]))
    # the cache file is written, keyed by the font list, and reloads identical arrays
    cache_file = Path(d.info["cache"])
    assert cache_file.exists() and cache_file.parent == tmp_path / "cache"
    again = load_fonts(samples_per_font=2, seed=3, test_fraction=0.25, font_dirs=[font_subset])
    assert again.info["cache"] == d.info["cache"]
    np.testing.assert_array_equal(again.x_train, d.x_train)
    np.testing.assert_array_equal(again.y_test, d.y_test)
    assert again.info["test_fonts"] == d.info["test_fonts"]
    # without the cache the generator reproduces the same arrays
    fresh = load_fonts(samples_per_font=2, seed=3, test_fraction=0.25, font_dirs=[font_subset], cache=False)
    np.testing.assert_array_equal(fresh.x_test, d.x_test)
    # another seed: another cache key and other augmentations
    other = load_fonts(samples_per_font=2, seed=4, test_fraction=0.25, font_dirs=[font_subset], cache=False)
    assert not np.array_equal(other.x_train, d.x_train)


def test_font_list_hash_changes_with_fonts_and_arguments(installed_fonts):
    a = font_list_hash(installed_fonts[:3], 4, 0)
    assert a == font_list_hash(installed_fonts[:3], 4, 0)
    assert a != font_list_hash(installed_fonts[:4], 4, 0)
    assert a != font_list_hash(installed_fonts[:3], 5, 0)


def test_load_fonts_without_fonts_names_the_apt_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no font covering 0-9, A-Z, a-z found under .*apt-get install fonts-dejavu-core"):
        load_fonts(font_dirs=[tmp_path])


def test_load_fonts_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("LIP_FONT_DIRS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_fonts()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"samples_per_font": 0}, r"samples_per_font must be a positive integer; got 0"),
        ({"samples_per_font": 2.0}, r"samples_per_font must be a positive integer; got 2.0"),
        ({"test_fraction": 0.0}, r"test_fraction must lie in \(0, 1\); got 0.0"),
        ({"test_fraction": 1.5}, r"test_fraction must lie in \(0, 1\); got 1.5"),
    ],
)
def test_load_fonts_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_fonts(**kwargs)


def test_font_class_map_uses_the_font_class_order():
    import string

    from experiments.fonts import FONT_CHARACTERS, FONT_CLASS_MAP
    from lip_agnostic.noise import asymmetric_noise

    assert FONT_CHARACTERS == string.digits + string.ascii_uppercase + string.ascii_lowercase
    m, idx = FONT_CLASS_MAP, FONT_CHARACTERS.index
    assert m[idx("O")] == idx("0") and m[idx("0")] == idx("O")
    assert m[idx("l")] == idx("1") and m[idx("o")] == idx("O")
    assert all(0 <= k < 62 and 0 <= v < 62 and k != v for k, v in m.items())
    y = np.repeat(np.arange(62), 20)
    r = asymmetric_noise(y, 0.4, FONT_CLASS_MAP, n_classes=62, seed=0)
    moved = r.labels != y
    assert r.transition.shape == (62, 62) and set(np.unique(y[moved])) <= set(FONT_CLASS_MAP)
    assert all(r.labels[i] == FONT_CLASS_MAP[y[i]] for i in np.nonzero(moved)[0])
