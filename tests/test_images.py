"""The guarded image reader on a corpus of awkward files (generated here, see image_corpus.py): each file's expected
row, peak memory measured in a fresh process, and a dataset folder holding such files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import make_dataset
from image_corpus import blank_png, good, make_corpus, peak_of, smear
from PIL import Image

from wbc_utils.data import build_manifest, check_files, decode_image, load_split
from wbc_utils.errors import ImageError
from wbc_utils.images import MAX_PIXELS, check_image, open_image, read_array, read_resized

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, make_corpus(folder)


def _cases(corpus):
    folder, cases = corpus
    for c in cases:
        if c.name == "no-permission.png" and AS_ROOT:
            continue  # root reads any file: there is no refusal to see
        yield folder / c.name, c


def test_each_file_gets_its_expected_row(corpus):
    """Read as predict reads a field (reduced towards 320x240): an array that passes the case's check, or the
    one-line reason the case names; never an exception."""
    wrong = []
    for path, case in _cases(corpus):
        got = read_array(path, reduce_to=(320, 240))
        if case.error is not None:
            ok = isinstance(got, str) and case.error in got and "\n" not in got
        else:
            ok = not isinstance(got, str) and got.dtype == np.uint8 and got.ndim == 3 and case.check(got)
        if not ok:
            wrong.append(f"{case.name} ({case.note}): {got if isinstance(got, str) else got.shape}")
    assert not wrong, "\n".join(wrong)


def test_every_readable_file_becomes_a_field_and_the_header_check_agrees(corpus):
    for path, case in _cases(corpus):
        field = decode_image(str(path), (240, 320))
        header = check_image(path)
        if case.error is None:
            assert not isinstance(field, str) and field.shape == (240, 320, 3), case.name
            assert header is None, case.name
        else:
            assert isinstance(field, str) and case.error in field, case.name
            # what the header gives away is refused without decoding; a broken stream only when decoded
            if case.name not in ("truncated.png",):
                assert header is not None and case.error in header, case.name


def test_the_bombs_are_real_bombs_for_pillow(corpus):
    """Without the guard, Pillow itself stops on them (the error that ended a whole predict run)."""
    folder, _ = corpus
    with pytest.raises(Image.DecompressionBombError):
        Image.open(folder / "bomb.png")
    assert (folder / "bomb.png").stat().st_size < 200_000  # a few kilobytes that declare 400 megapixels
    with pytest.warns(Image.DecompressionBombWarning), Image.open(folder / "huge.png") as im:
        assert im.size[0] * im.size[1] > MAX_PIXELS  # 144 megapixels: only a warning for Pillow, then decoded


def test_exif_orientation_is_applied(corpus):
    folder, _ = corpus
    upright = open_image(folder / "rotated.jpg")
    assert upright.size == (32, 64)  # stored 64x32, orientation 6
    a = np.asarray(upright)
    assert a[:20, :, 0].mean() > 180 and a[44:, :, 2].mean() > 180  # the red half is on top


def test_grey_output_and_errors_name_the_file_problem(corpus):
    folder, _ = corpus
    grey = read_array(folder / "good.jpg", mode="L")
    assert grey.shape == (240, 320) and grey.dtype == np.uint8
    with pytest.raises(ImageError, match="decompression bomb"):
        open_image(folder / "bomb.png")
    with pytest.raises(ValueError, match="mode"):
        open_image(folder / "good.jpg", mode="CMYK")
    assert read_array(folder / "missing.png") == "no such file"
    assert "not a regular file" in read_array(folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_named_like_an_image_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    assert "not a regular file" in read_array(tmp_path / "pipe.png")


@pytest.mark.skipif(AS_ROOT, reason="root reads any file")
def test_a_file_without_read_permission(corpus):
    folder, _ = corpus
    assert read_array(folder / "no-permission.png") == "cannot read file: permission denied"


MEASURE = """
import json, resource, sys
from wbc_utils.images import read_resized
rows = {}
for p in sys.argv[1:]:
    r = read_resized(p, (240, 320))
    rows[p] = r if isinstance(r, str) else list(r.shape)
print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "rows": rows}))
"""


def _peak(paths: list[Path]) -> tuple[float, dict]:
    """Peak resident memory (MB) of a fresh process that reads ``paths`` through the guarded reader."""
    out = peak_of(MEASURE, list(map(str, paths)))
    return out["maxrss_kb"] / 1024, out["rows"]


#: Stated bound: reading the whole corpus (the bombs, the 6400x4800 JPEG, the 20000x3 PNG included) costs at most
#: this much resident memory over reading its good files alone, and at most 1.5 times as much. Measured: 28 MB for
#: the interpreter, 33 MB with the good files, 35 MB with every file. Unguarded, huge.png alone decodes to 144 MB
#: (1-bit pixels held as bytes) and about 580 MB once converted to RGB.
EXTRA_MB = 16


def test_peak_memory_of_the_whole_corpus_stays_near_the_good_files_alone(corpus):
    folder, cases = corpus
    everything = [p for p, _ in _cases(corpus)]
    base, _ = _peak([])
    good_mb, _ = _peak([folder / c.name for c in good(cases)])
    all_mb, rows = _peak(everything)
    print(f"peak RSS: interpreter {base:.0f} MB, good files {good_mb:.0f} MB, whole corpus {all_mb:.0f} MB")
    assert all_mb <= good_mb + EXTRA_MB and all_mb <= 1.5 * good_mb
    assert "decompression bomb" in rows[str(folder / "bomb.png")]


# ----------------------------------------------------------------------------- a dataset folder holding such files

def test_a_bomb_in_the_dataset_is_skipped_and_listed_with_its_reason(tmp_path, cache_dir):
    root = make_dataset(tmp_path / "blood-cells", cells=(2, 1), copies=2)
    d = root / "images" / "TEST" / "NEUTROPHIL"
    blank_png(d / "_7_7.png", 20000, 20000)
    (d / "_7_8.jpeg").write_bytes(b"")
    smear((64, 48)).save(d / "_7_9.png")
    m = build_manifest(root)
    found = {Path(s.path).name: s.reason for s in check_files(m)}
    assert set(found) == {"_7_7.png", "_7_8.jpeg"}  # before anything is decoded
    assert "decompression bomb" in found["_7_7.png"]
    m = build_manifest(root)
    s = load_split(m, "TEST", (24, 32), progress=False)
    reasons = {Path(x.path).name: x.reason for x in m.skipped}
    assert "decompression bomb" in reasons["_7_7.png"] and reasons["_7_8.jpeg"] == "empty file (0 bytes)"
    assert "_7_9.png" in set(s.frame["file"]) and "_7_7.png" not in set(s.frame["file"])
    # a later manifest (the report's, a notebook's) lists them from the cache's records, decoding nothing
    again = {Path(x.path).name: x.reason for x in build_manifest(root).skipped}
    assert "decompression bomb" in again["_7_7.png"] and again["_7_8.jpeg"] == "empty file (0 bytes)"


def test_reader_keeps_the_datasets_pixels(tiny_dataset):
    """The dataset's JPEGs decode as before the guard (Image.draft, convert, bilinear resize): caches stay valid."""
    path = next((tiny_dataset / "images" / "TRAIN" / "EOSINOPHIL").glob("*.jpeg"))
    for size in ((32, 40), (16, 20), (64, 80)):
        with Image.open(path) as im:
            im.draft("RGB", (size[1], size[0]))
            im = im.convert("RGB")
            if im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=2.0)
            assert np.array_equal(np.asarray(im), read_resized(path, size))
