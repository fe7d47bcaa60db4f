"""A 62-class character dataset rendered from the fonts installed on the machine.

The Chars74K "Fnt" recipe (de Campos, Babu & Varma, 2009), rebuilt offline:
every character ``0-9 A-Z a-z`` (class order
:data:`FONT_CHARACTERS`) is rendered from every usable
font, a few times each with small seeded augmentations, into a grayscale
``image_size x image_size`` image. Train and test are split **by font
family**: no typeface (nor a known metric-compatible clone of it) is on both
sides, so test accuracy measures generalization to unseen typefaces.

The fonts come from Debian packages (``.ci/apt-packages.txt`` lists them,
e.g. ``apt-get install fonts-dejavu-core fonts-liberation fonts-noto-core
fonts-urw-base35 fonts-texgyre ...``); ``$LIP_FONT_DIRS`` (``os.pathsep``
separated) replaces the default search folders.

Steps of :func:`render_font`
----------------------------
1. Per font: the font size at which a capital ``H`` is ``0.70 * image_size``
   tall, at 4x supersampling. Lower-case letters therefore keep their
   smaller size (``o`` stays distinguishable from ``O``).
2. Per glyph, seeded draws: rotation ``U(-8, 8)`` degrees, scale
   ``U(0.85, 1.10)``, shift ``U(-1.5, 1.5)`` output pixels per axis, extra
   stroke ``{0, 0, 1, 2}`` supersampled pixels (a slightly bolder weight;
   the font's own weights come from the package's Bold/Light files).
3. Draw the glyph white on black, rotate and scale it about its centre,
   crop it to its bounding box, shrink it if it exceeds the frame, and paste
   it so that the bounding box is centred (plus the shift).
4. Downsample 4x with a box filter to ``image_size x image_size``; scale to
   ``[0, 1]``.

A font is used only if its character map covers all 62 characters and its
62 renderings are non-empty and mostly distinct (a font that maps letters
to symbols or to the ``.notdef`` box is dropped).

Examples
--------
>>> from experiments.fonts import discover_fonts, render_font  # doctest: +SKIP
>>> fonts = discover_fonts()                                      # doctest: +SKIP
>>> render_font(fonts[0].path, samples=2, seed=0).shape           # doctest: +SKIP
(124, 28, 28)
"""

from __future__ import annotations

import hashlib
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "CHARACTERS",
    "FONT_CHARACTERS",
    "FONT_CLASS_MAP",
    "clone_group",
    "DEFAULT_FONT_DIRS",
    "GENERATOR_VERSION",
    "FontFile",
    "FontSplit",
    "discover_fonts",
    "font_dirs",
    "font_list_hash",
    "render_font",
    "split_by_family",
]

#: Class order of the rendered-font dataset: 0-9, A-Z, a-z.
FONT_CHARACTERS: str = string.digits + string.ascii_uppercase + string.ascii_lowercase
CHARACTERS: str = FONT_CHARACTERS


def _font_map(pairs: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for pair in pairs.split():
        src, dst = pair.split(">")
        out[FONT_CHARACTERS.index(src)] = FONT_CHARACTERS.index(dst)
    return out


#: Class map of the asymmetric ("class-conditional") label noise on this dataset, for
#: :func:`lip_agnostic.noise.asymmetric_noise` (``{source: target}``, class order
#: :data:`FONT_CHARACTERS`): glyphs that look alike in many typefaces, the digit/letter
#: look-alikes 0 -> O, O -> 0, 1 -> l, l -> 1, I -> l, 5 -> S, 2 -> Z, 8 -> B, 9 -> g; and lower
#: case letters whose glyph is a scaled capital: c o s u v w x z -> C O S U V W X Z.
FONT_CLASS_MAP: dict[int, int] = _font_map("0>O O>0 1>l l>1 I>l 5>S 2>Z 8>B 9>g c>C o>O s>S u>U v>V w>W x>X z>Z")
GENERATOR_VERSION = 1  # bump when the rendering changes (invalidates caches)
DEFAULT_FONT_DIRS: tuple[Path, ...] = (Path("/usr/share/fonts"), Path("/usr/share/texmf/fonts/opentype"))
APT_HINT = (
    "apt-get install fonts-dejavu-core fonts-liberation fonts-noto-core fonts-urw-base35 fonts-texgyre "
    "(the full list: .ci/apt-packages.txt)"
)

_SUPERSAMPLE = 4
_CAP_FRACTION = 0.70
_EXCLUDED_FAMILY = re.compile(
    r"symbol|dingbat|d050000l|awesome|emoji|icons?\b|ornament|integrals|sizes?\w*sym|nonunicode|keyboard|smallcaps|small caps|\bsc\b",
    re.I,
)

# Metric-compatible clones and close revivals of one design, kept on the same side of the split.
_CLONE_GROUPS: dict[str, tuple[str, ...]] = {
    "helvetica": ("liberation sans", "arimo", "nimbus sans", "tex gyre heros", "freesans"),
    "times": ("liberation serif", "tinos", "nimbus roman", "tex gyre termes", "freeserif"),
    "courier": ("liberation mono", "cousine", "nimbus mono", "tex gyre cursor", "freemono"),
    "palatino": ("p052", "tex gyre pagella"),
    "bookman": ("urw bookman", "tex gyre bonum"),
    "century schoolbook": ("c059", "tex gyre schola"),
    "avant garde": ("urw gothic", "tex gyre adventor"),
    "zapf chancery": ("z003", "tex gyre chorus"),
    "calibri": ("carlito",),
    "cambria": ("caladea",),
    "vera": ("dejavu",),
}


@dataclass(frozen=True)
class FontFile:
    """A usable font: its file, its family (the split unit) and its style."""

    path: Path
    family: str
    style: str


@dataclass(frozen=True)
class FontSplit:
    """Fonts on each side of the train/test split (disjoint families)."""

    train: tuple[FontFile, ...]
    test: tuple[FontFile, ...]


def font_dirs() -> tuple[Path, ...]:
    """Folders searched for fonts: ``$LIP_FONT_DIRS`` or :data:`DEFAULT_FONT_DIRS`."""
    env = os.environ.get("LIP_FONT_DIRS")
    if env:
        return tuple(Path(p) for p in env.split(os.pathsep) if p)
    return DEFAULT_FONT_DIRS


def _names(font) -> tuple[str, str]:
    table = font["name"]

    def get(*ids: int) -> str:
        for i in ids:
            rec = table.getDebugName(i)
            if rec:
                return str(rec).strip()
        return ""

    return get(16, 1), get(17, 2) or "Regular"


def clone_group(family: str) -> str:
    """The split unit of a family: a clone group's name, or the family itself (lower case)."""
    f = family.lower()
    for group, members in _CLONE_GROUPS.items():
        if any(f.startswith(m) for m in members):
            return group
    # one design family per first word ("Noto Sans Mono", "PT Serif Caption", "Accanthis ADF Std No2"),
    # with suffixes glued to it stripped ("STIXGeneral", "GentiumAlt")
    first = f.split()[0] if f.split() else f
    return re.sub(r"(general|alt)$", "", first) or first


def discover_fonts(dirs: Iterable[Path] | None = None) -> list[FontFile]:
    """Fonts under ``dirs`` (default :func:`font_dirs`) whose character map covers all 62 characters.

    Steps
    -----
    1. Every ``.ttf``/``.otf`` file, sorted by path.
    2. Keep it when its best Unicode cmap holds all of :data:`CHARACTERS` and
       its family is not a symbol/dingbat/icon font.
    3. Drop duplicates of the same ``(family, style)`` (e.g. two packaged
       versions of one font), keeping the first by path.
    """
    from fontTools.ttLib import TTFont

    need = {ord(c) for c in CHARACTERS}
    paths: list[Path] = []
    for d in (font_dirs() if dirs is None else tuple(Path(p) for p in dirs)):
        if d.is_dir():
            paths.extend(p for p in d.rglob("*") if p.suffix.lower() in (".ttf", ".otf") and p.is_file())
    out: list[FontFile] = []
    seen: set[tuple[str, str]] = set()
    for path in sorted(set(paths)):
        try:
            font = TTFont(str(path), lazy=True, fontNumber=0)
            cmap = font.getBestCmap() or {}
            family, style = _names(font)
        except Exception:  # unreadable or unsupported font file: skip it
            continue
        if not need <= set(cmap) or not family or _EXCLUDED_FAMILY.search(family):
            continue
        key = (family.lower(), style.lower())
        if key in seen:
            continue
        seen.add(key)
        out.append(FontFile(path=path, family=family, style=style))
    return out


def font_list_hash(fonts: Sequence[FontFile], *extra: object) -> str:
    """Hex digest keying the cache: font paths, sizes, the generator version and ``extra``."""
    h = hashlib.sha256(f"v{GENERATOR_VERSION}".encode())
    for f in fonts:
        size = f.path.stat().st_size if f.path.exists() else -1
        h.update(f"{f.path}|{size}|{f.family}|{f.style}\n".encode())
    for e in extra:
        h.update(repr(e).encode())
    return h.hexdigest()[:16]


def split_by_family(fonts: Sequence[FontFile], test_fraction: float, seed: int) -> FontSplit:
    """Seeded split of fonts into train/test with no family (clone group) on both sides.

    Steps
    -----
    1. Group fonts by :func:`clone_group` of their family.
    2. Shuffle the groups with ``seed``; move groups into test until it holds
       at least ``test_fraction`` of the fonts (at least one group, and at
       least one group stays in train).
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1); got {test_fraction}")
    groups: dict[str, list[FontFile]] = {}
    for f in fonts:
        groups.setdefault(clone_group(f.family), []).append(f)
    if len(groups) < 2:
        raise ValueError(f"need fonts of at least 2 families to split by family; found {len(groups)} ({sorted(groups)})")
    names = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(names))
    test: list[FontFile] = []
    test_groups = 0
    for i in order:
        if len(test) >= test_fraction * len(fonts) or test_groups == len(names) - 1:
            break
        test.extend(groups[names[i]])
        test_groups += 1
    test_set = {f.path for f in test}
    train = tuple(f for f in fonts if f.path not in test_set)
    return FontSplit(train=train, test=tuple(sorted(test, key=lambda f: str(f.path))))


def _font_size_for_cap(path: Path, cap_px: float):
    from PIL import ImageFont

    probe = ImageFont.truetype(str(path), 100)
    l, t, r, b = probe.getbbox("H")
    h = max(b - t, 1)
    size = max(int(round(100 * cap_px / h)), 4)
    return ImageFont.truetype(str(path), size)


def render_font(path: Path | str, samples: int, seed: int | np.random.Generator, *, image_size: int = 28) -> np.ndarray | None:
    """Render every character of one font ``samples`` times: uint8 ``(62 * samples, s, s)`` or None.

    Row ``i`` holds character ``CHARACTERS[i % 62]`` (sample ``i // 62``).
    Returns ``None`` when the font is unusable (an empty glyph, or fewer
    than 55 distinct glyphs among the 62 unaugmented renderings).
    """
    from PIL import Image, ImageDraw

    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer; got {samples!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8; got {image_size!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    S = _SUPERSAMPLE
    big = image_size * S
    font = _font_size_for_cap(Path(path), _CAP_FRACTION * big)
    canvas = 2 * big
    # unaugmented check: every glyph drawn, and the glyphs differ
    plain = []
    for ch in CHARACTERS:
        img = Image.new("L", (canvas, canvas), 0)
        ImageDraw.Draw(img).text((canvas / 2, canvas / 2), ch, fill=255, font=font, anchor="mm")
        bbox = img.getbbox()
        if bbox is None:
            return None
        plain.append(hashlib.md5(img.crop(bbox).tobytes()).digest())
    if len(set(plain)) < 55:
        return None
    n = samples * len(CHARACTERS)
    angle = rng.uniform(-8.0, 8.0, n)
    scale = rng.uniform(0.85, 1.10, n)
    shift = rng.uniform(-1.5, 1.5, (n, 2)) * S
    stroke = rng.choice(np.array([0, 0, 1, 2]), n)
    out = np.zeros((n, image_size, image_size), dtype=np.uint8)
    limit = big - 2 * S
    for i in range(n):
        ch = CHARACTERS[i % len(CHARACTERS)]
        img = Image.new("L", (canvas, canvas), 0)
        ImageDraw.Draw(img).text(
            (canvas / 2, canvas / 2), ch, fill=255, font=font, anchor="mm",
            stroke_width=int(stroke[i]), stroke_fill=255,
        )
        # crop a square around the glyph that holds it after rotation and scaling, then
        # rotate + scale about its centre in one affine map (inverse map: output -> input)
        l0, t0, r0, b0 = img.getbbox() or (0, 0, 1, 1)
        side = int(np.ceil(np.hypot(r0 - l0, b0 - t0) * scale[i])) + 4
        gx, gy = (l0 + r0) // 2, (t0 + b0) // 2
        img = img.crop((gx - side // 2, gy - side // 2, gx - side // 2 + side, gy - side // 2 + side))
        a = np.deg2rad(angle[i])
        c, s = np.cos(a) / scale[i], np.sin(a) / scale[i]
        cx = side / 2
        coeffs = (c, s, cx - c * cx - s * cx, -s, c, cx + s * cx - c * cx)
        img = img.transform((side, side), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)
        glyph = img.crop(img.getbbox() or (0, 0, 1, 1))
        w, h = glyph.size
        if max(w, h) > limit:
            f = limit / max(w, h)
            glyph = glyph.resize((max(1, int(w * f)), max(1, int(h * f))), Image.Resampling.BOX)
            w, h = glyph.size
        frame = Image.new("L", (big, big), 0)
        x0 = int(round((big - w) / 2 + shift[i, 0]))
        y0 = int(round((big - h) / 2 + shift[i, 1]))
        x0 = min(max(x0, 0), big - w)
        y0 = min(max(y0, 0), big - h)
        frame.paste(glyph, (x0, y0))
        out[i] = np.asarray(frame.reduce(S), dtype=np.uint8)
    return out
