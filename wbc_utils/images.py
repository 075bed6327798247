"""Every image file the package reads is opened here, one guarded way.

Predict, the dataset's decoding (:func:`wbc_utils.data.decode_image`, so the manifest's cache, the out-of-distribution
fit and the explorer), the slide matcher and the figures' galleries all call :func:`open_image` (or its array
forms). A user's folder or a damaged dataset may hold anything, so the reader:

* **checks the size from the header before decoding anything.** Pillow reads only the header when it opens a file.
  An image over :data:`MAX_PIXELS` (Pillow's own decompression-bomb limit, 89.5 megapixels) is refused
  whatever its format: a 400 KB PNG can declare 20000x20000 pixels. Pillow's ``DecompressionBombError`` and
  ``DecompressionBombWarning`` become that refusal too, never a traceback.
* **decodes large images reduced.** A JPEG is decoded at 1/2, 1/4 or 1/8 scale (``Image.draft``) when the caller
  needs no more (``reduce_to``); no other format can be decoded reduced, so one whose decoded size would be over
  :data:`MAX_DECODE_PIXELS` (25 megapixels, about 100 MB) is refused with the reason, and a smaller one is
  ``reduce``-d right after decoding, before any conversion copies it.
* **applies the EXIF orientation** (``ImageOps.exif_transpose``): a phone photo is not read sideways.
* **converts every mode the same way**: the first frame of an animated or multi-page file; palette and 1-bit
  images through RGB; 16-bit (and 32-bit integer) images scaled from their type's range to 8 bits (65535 -> 255,
  where Pillow's own conversion clips everything over 255 to white); floating-point images read as 0-1 when
  they stay within it, else as 0-255; transparency composited over white (an empty, bright field); CMYK, YCbCr
  and LAB converted by Pillow. Grey is the JPEG's own luma when the file stores it (what OpenCV reads too), else
  Pillow's RGB -> L.

A file that cannot be read gets a one-line reason (:class:`~wbc_utils.errors.ImageError`), never an exception
that ends a run over other files. This module imports no other package module but :mod:`wbc_utils.errors`.
"""
from __future__ import annotations

import os
import re
import stat
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

#: Largest image, in pixels, that is opened at all (any format): Pillow's decompression-bomb limit.
MAX_PIXELS = 89_478_485
#: Largest image, in pixels, that is decoded in full (after a JPEG's reduced decoding): 25 megapixels, a 6000x4000
#: camera frame, about 100 MB as RGB.
MAX_DECODE_PIXELS = 25_000_000
#: The EXIF tag that says how the camera was held.
ORIENTATION = 0x0112
#: Background that transparent pixels are composited over: white, like the empty part of a smear.
BACKGROUND = (255, 255, 255)
#: Modes whose samples are wider than 8 bits: scaled to 8 bits by their type's range.
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I", "F")
OUTPUT_MODES = ("RGB", "L")

_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} megapixels"


def _bomb(pixels: int) -> ImageError:
    return ImageError(f"refused: {_mp(pixels)} is over the {_mp(MAX_PIXELS)} limit for any image (a possible "
                      f"decompression bomb); shrink it first")


#: The first bytes of the formats a user most often has: a file that starts like one but does not open is damaged.
SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"II*\x00", "TIFF"),
              (b"MM\x00*", "TIFF"), (b"BM", "BMP"))


def _signature(path: str | os.PathLike) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    return next((kind for magic, kind in SIGNATURES if head.startswith(magic)), None)


def _header(path: str | os.PathLike) -> Image.Image:
    """The opened file (header read, nothing decoded), or ImageError: not a file, empty, unreadable, refused."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except OSError as e:
        raise ImageError(f"cannot read file: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageError("not a regular file (a folder, device, socket or pipe)")
    if st.st_size == 0:
        raise ImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, against MAX_PIXELS
            im = Image.open(path)
    except Image.DecompressionBombError as e:
        found = _BOMB_PIXELS.search(str(e))
        raise (_bomb(int(found.group(1))) if found else ImageError(f"refused: {e}")) from None
    except PermissionError:
        raise ImageError("cannot read file: permission denied") from None
    except UnidentifiedImageError:
        kind = _signature(path)
        raise ImageError(f"cannot decode image: a damaged {kind} file (its header cannot be read)" if kind else
                         "cannot decode image: not an image file Pillow can read") from None
    except Exception as e:  # noqa: BLE001  (a malformed header: any plug-in's error, one line)
        raise ImageError(f"cannot decode image: {type(e).__name__}: {e}") from None
    w, h = im.size
    if w * h > MAX_PIXELS:
        im.close()
        raise _bomb(w * h)
    if w < 1 or h < 1:
        im.close()
        raise ImageError(f"cannot decode image: it declares {w}x{h} pixels")
    return im


def _turned(im: Image.Image) -> bool:
    """Whether the EXIF orientation turns the image by 90 degrees (so width and height swap)."""
    try:
        return im.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001  (a damaged EXIF block: the pixels are read as stored)
        return False


def _plan_decode(im: Image.Image, reduce_to: Sequence[int] | None, mode: str) -> None:
    """Ask for a JPEG's reduced decoding (no smaller than ``reduce_to``, turned as the file stores it), then
    refuse what would still be decoded over :data:`MAX_DECODE_PIXELS`. Decodes nothing."""
    if im.format == "JPEG":
        size = im.size
        if reduce_to is not None:
            tw, th = int(reduce_to[0]), int(reduce_to[1])
            size = (th, tw) if _turned(im) else (tw, th)
        im.draft("L" if mode == "L" else "RGB", size)  # grey straight from the JPEG's luma
    w, h = im.size  # after draft: what will be decoded
    if w * h > MAX_DECODE_PIXELS:
        raise ImageError(f"refused: a {w}x{h} {im.format or 'image'} would be decoded in full ({_mp(w * h)}, over "
                         f"the {_mp(MAX_DECODE_PIXELS)} limit; only JPEG can be decoded reduced): shrink it first")


def _to_8bit(im: Image.Image) -> Image.Image:
    """A high-bit-depth single-channel image as 8-bit L, scaled by its type's range."""
    a = np.asarray(im)
    if im.mode == "F":
        a = np.nan_to_num(a.astype(np.float32, copy=False), nan=0.0, posinf=255.0, neginf=0.0)
        top = float(a.max()) if a.size else 0.0
        a = np.clip(a * 255.0 if top <= 1.0 else a, 0, 255)
        return Image.fromarray(np.rint(a).astype(np.uint8), "L")
    if im.mode == "I" and a.size and 0 <= int(a.min()) and int(a.max()) <= 255:  # 8-bit samples, 32-bit container
        return Image.fromarray(a.astype(np.uint8), "L")
    a = np.clip(a, 0, 65535).astype(np.uint32)  # 16-bit range; a signed type's negatives are black
    return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), "L")


def _reducible(im: Image.Image) -> Image.Image:
    """``im`` in a mode that ``Image.reduce`` and the conversions below take (no copy when it already is)."""
    if im.mode in HIGH_BIT_MODES:
        return _to_8bit(im)
    if im.mode == "1":
        return im.convert("L")
    if im.mode in ("P", "PA"):
        return im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    if im.mode in ("La", "RGBa"):  # premultiplied alpha
        return im.convert({"La": "LA", "RGBa": "RGBA"}[im.mode])
    return im


def _output(im: Image.Image, mode: str) -> Image.Image:
    """The image in ``mode`` (RGB or L): transparency over :data:`BACKGROUND`, everything else by Pillow."""
    if im.mode in ("RGBA", "LA"):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba).convert("RGB")
    if im.mode == mode:
        return im
    if im.mode not in ("RGB", "L"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV: through RGB, so grey is computed one way
    return im if im.mode == mode else im.convert(mode)


def open_image(path: str | os.PathLike, reduce_to: Sequence[int] | None = None, mode: str = "RGB") -> Image.Image:
    """Open, check and decode one image file: a loaded 8-bit Pillow image in ``mode`` ("RGB" or "L"), upright.

    ``reduce_to`` (width, height) is the smallest size the caller needs: a larger image is decoded or reduced by
    an integer factor to no less than it (the caller resizes the rest of the way); None keeps the full size.
    Raises :class:`~wbc_utils.errors.ImageError` with a one-line reason for a file that cannot be read or is
    refused (see the module's docstring); never any other exception for a bad file.
    """
    if mode not in OUTPUT_MODES:
        raise ValueError(f"mode={mode!r} is not valid; valid values: {', '.join(OUTPUT_MODES)}")
    im = _header(path)
    try:
        _plan_decode(im, reduce_to, mode)
        im.load()
        ImageOps.exif_transpose(im, in_place=True)
        out = _reducible(im)
        if reduce_to is not None:  # upright now: compared with the upright size the caller needs
            factor = min(out.size[0] // max(1, int(reduce_to[0])), out.size[1] // max(1, int(reduce_to[1])))
            if factor >= 2:
                out = out.reduce(factor)
        out = _output(out, mode)
        return out.copy() if out is im else out  # the file's own object is closed below
    except ImageError:
        raise
    except Image.DecompressionBombError as e:  # a later frame, or a plug-in's own check
        raise ImageError(f"refused: {e}") from None
    except Exception as e:  # noqa: BLE001  (truncated, bad CRC, broken stream: whatever Pillow's plug-in raises)
        raise ImageError(f"cannot decode image: {str(e).strip() or type(e).__name__}") from None
    finally:
        im.close()


def read_array(path: str | os.PathLike, reduce_to: Sequence[int] | None = None, mode: str = "RGB") -> np.ndarray | str:
    """:func:`open_image` as a uint8 array (H, W, 3) for RGB, (H, W) for L; or the reason it cannot be read."""
    try:
        return np.asarray(open_image(path, reduce_to, mode), dtype=np.uint8)
    except ImageError as e:
        return str(e)


def read_resized(path: str | os.PathLike, size: Sequence[int]) -> np.ndarray | str:
    """One image as uint8 RGB (H, W, 3) at ``size`` (height, width): decoded reduced towards it, then resized
    bilinearly; or the reason it cannot be read. What :func:`wbc_utils.data.decode_image` does for a whole field."""
    h, w = int(size[0]), int(size[1])
    try:
        im = open_image(path, (w, h), "RGB")
    except ImageError as e:
        return str(e)
    if im.size != (w, h):
        im = im.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(im, dtype=np.uint8)


def check_image(path: str | os.PathLike, reduce_to: Sequence[int] | None = (320, 240)) -> str | None:
    """What :func:`open_image` would refuse from the header alone, decoding no pixel: the reason, or None.

    A file that passes can still fail when it is decoded (truncated, a bad checksum); that is found when it is read.
    """
    try:
        im = _header(path)
    except ImageError as e:
        return str(e)
    try:
        if im.size[0] * im.size[1] <= MAX_DECODE_PIXELS:  # reducing only shrinks it: nothing more to ask
            return None
        _plan_decode(im, reduce_to, "RGB")
        return None
    except ImageError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001
        return f"cannot decode image: {str(e).strip() or type(e).__name__}"
    finally:
        im.close()
