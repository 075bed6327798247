"""Awkward image files, generated (never committed): what a user's folder or a damaged dataset may hold.

:func:`make_corpus` writes every file into a folder and returns, for each, what the guarded reader
(:mod:`wbc_utils.images`) must make of it: ``ok`` (read, with an optional check of the pixels) or the words its
one-line reason contains. The bombs are written as PNG bytes directly (a header declaring the size, then a
zlib stream of blank rows compressed as it is produced), so making them costs a few megabytes, not gigabytes.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from conftest import budget
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Case:
    name: str                    # file name inside the corpus folder
    error: str | None = None     # words the reason must contain; None: the file must be read
    check: Callable[[np.ndarray], bool] | None = None   # on read_array(path, reduce_to=(320, 240)): RGB uint8
    note: str = ""


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def blank_png(path: Path, width: int, height: int) -> Path:
    """A 1-bit greyscale PNG of ``width`` x ``height`` white pixels, streamed: a decompression bomb when large."""
    row = b"\x00" + b"\xff" * ((width + 7) // 8)  # filter byte 0, then the packed pixels
    comp = zlib.compressobj(9)
    parts = []
    block = row * max(1, min(height, (1 << 22) // len(row)))  # compress a few MB at a time
    per_block = len(block) // len(row)
    left = height
    while left > 0:
        n = min(left, per_block)
        parts.append(comp.compress(block if n == per_block else row * n))
        left -= n
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts))
                     + _chunk(b"IEND", b""))
    return path


def smear(size: tuple[int, int] = (320, 240), seed: int = 0) -> Image.Image:
    """A smear-like RGB field (width, height): pink noise with a purple blob."""
    w, h = size
    rng = np.random.default_rng(seed)
    img = rng.integers(150, 220, (h, w, 3)).astype(np.uint8)
    img[h // 3:h // 2, w // 3:w // 2] = (120, 60, 200)
    return Image.fromarray(img)


def _png(im: Image.Image) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


def _rotated_jpeg(path: Path) -> None:
    """Stored 64 wide x 32 high, red on the left half; EXIF orientation 6 (turn 90 degrees clockwise to view):
    upright it is 32 wide x 64 high, red on the top half."""
    a = np.zeros((32, 64, 3), np.uint8)
    a[:, :32] = (230, 20, 20)
    a[:, 32:] = (20, 20, 230)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(path, "JPEG", quality=95, exif=exif.tobytes())


def _red_top(a: np.ndarray) -> bool:
    return a.shape[:2] == (64, 32) and a[:20, :, 0].mean() > 180 and a[44:, :, 2].mean() > 180


def make_corpus(folder: Path) -> list[Case]:
    """Write the corpus into ``folder``; return its cases (one per file)."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(case: Case, write: Callable[[Path], object]) -> None:
        write(folder / case.name)
        cases.append(case)

    add(Case("good.jpg", check=lambda a: a.shape == (240, 320, 3)), lambda p: smear().save(p, "JPEG"))
    add(Case("empty.png", "empty file (0 bytes)"), lambda p: p.write_bytes(b""))
    add(Case("notes.jpeg", "not an image file"), lambda p: p.write_text("a text file named like a JPEG\n"))
    (folder / "readme.txt").write_text("the target of a symlink\n")
    add(Case("link-to-text.png", "not an image file", note="a symlink to a text file"),
        lambda p: os.symlink(folder / "readme.txt", p))
    add(Case("cmyk.jpg", check=lambda a: a.shape == (240, 320, 3) and a[100, 130, 2] > a[100, 130, 1]),
        lambda p: smear().convert("CMYK").save(p, "JPEG"))

    def gray16(p: Path) -> None:  # 16-bit: a ramp across the full 0-65535 range
        Image.fromarray(np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (16, 1))).save(p, "TIFF")
    add(Case("gray16.tif", check=lambda a: a[0, 0, 0] == 0 and a[0, -1, 0] == 255 and 120 <= a[0, 128, 0] <= 135,
             note="scaled, not clipped at 255"), gray16)

    def animated(p: Path) -> None:
        frames = [Image.new("RGB", (40, 30), c) for c in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
        frames[0].save(p, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    add(Case("animated.gif", check=lambda a: a[15, 20, 0] > 150 and a[15, 20, 1] < 80, note="the first frame"),
        animated)

    def rgba(p: Path) -> None:
        a = np.zeros((30, 40, 4), np.uint8)
        a[:, :20] = (10, 10, 10, 255)      # opaque black on the left; transparent (black underneath) on the right
        Image.fromarray(a, "RGBA").save(p, "PNG")
    add(Case("rgba.png", check=lambda a: a[15, 5].max() < 30 and a[15, 35].min() > 240, note="alpha over white"),
        rgba)

    def palette(p: Path) -> None:
        im = Image.new("P", (40, 30), 0)
        im.putpalette([0, 0, 0, 250, 10, 10] + [0] * 762)
        im.paste(1, (0, 0, 20, 30))
        im.save(p, "PNG", transparency=0)
    add(Case("palette.png", check=lambda a: a[15, 5, 0] > 200 and a[15, 35].min() > 240), palette)
    add(Case("one.png", check=lambda a: a.shape == (1, 1, 3)),
        lambda p: Image.new("RGB", (1, 1), (180, 90, 200)).save(p))
    add(Case("strip.png", check=lambda a: a.shape == (3, 20000, 3)),
        lambda p: Image.new("RGB", (20000, 3), (180, 90, 200)).save(p))
    add(Case("bomb.png", "decompression bomb", note="20000x20000, a few KB"), lambda p: blank_png(p, 20000, 20000))
    add(Case("huge.png", "decompression bomb", note="12000x12000"), lambda p: blank_png(p, 12000, 12000))
    add(Case("large.png", "would be decoded in full", note="6000x5000 PNG: over 25 megapixels, cannot be reduced"),
        lambda p: blank_png(p, 6000, 5000))
    add(Case("large.jpg", check=lambda a: a.shape == (300, 400, 3), note="6400x4800 JPEG: decoded at 1/8, reduced 2x"),
        lambda p: Image.new("L", (6400, 4800), 128).save(p, "JPEG"))
    good_png = _png(smear((64, 48)))
    add(Case("truncated.png", "cannot decode image"), lambda p: p.write_bytes(good_png[:len(good_png) // 2]))

    def bad_crc(p: Path) -> None:  # the header chunk's checksum is wrong
        data = bytearray(good_png)
        data[29] ^= 0xFF  # 8 (signature) + 4 (length) + 4 (type) + 13 (IHDR data): the first CRC byte
        p.write_bytes(bytes(data))
    add(Case("bad-crc.png", "cannot decode image"), bad_crc)

    def pages(p: Path) -> None:
        frames = [Image.new("RGB", (40, 30), c) for c in ((30, 30, 200), (200, 30, 30), (30, 200, 30))] * 4
        frames[0].save(p, "TIFF", save_all=True, append_images=frames[1:])
    add(Case("pages.tif", check=lambda a: a[15, 20, 2] > 150 and a[15, 20, 0] < 80, note="12 pages: the first"),
        pages)
    add(Case("rotated.jpg", check=_red_top, note="EXIF orientation 6"), _rotated_jpeg)
    add(Case("cell é 1 ü.png", check=lambda a: a.shape == (48, 64, 3), note="spaces and non-ASCII characters"),
        lambda p: p.write_bytes(good_png))

    def no_read(p: Path) -> None:
        p.write_bytes(good_png)
        p.chmod(0)
    add(Case("no-permission.png", "permission denied", note="skipped as root"), no_read)
    return cases


#: The cases that are read (the "good" files of a predict run): every case without an error.
def good(cases: list[Case]) -> list[Case]:
    return [c for c in cases if c.error is None]


# ----------------------------------------------------------------------------- peak memory of a fresh process

#: Starts the measured process from a small one: on Linux a process's ``ru_maxrss`` starts at the resident size of
#: the process it was forked from (pytest's, well over 100 MB), which would hide what the reading itself costs.
LAUNCH = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def peak_of(code: str, args: list[str], timeout: float | None = None) -> dict:
    """Run ``code`` (which prints a JSON object last, ``maxrss_kb`` from ``resource.getrusage``) in a fresh
    process started from a small launcher; its parsed JSON."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-c", LAUNCH, sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout or budget(60))
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])
