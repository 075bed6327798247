"""Image -> original slide mapping and same-cell clusters (wbc_utils.slides): the shipped files and the method."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CLASSES, real_data_dir

from wbc_utils import slides
from wbc_utils.errors import DataError

cv2 = pytest.importorskip("cv2")


# ----------------------------------------------------------------------------- helpers

def _real_roots() -> tuple[Path, Path | None] | None:
    """(images root, originals folder or None) of the real dataset, or None without it."""
    d = real_data_dir()
    if d is None:
        return None
    from wbc_utils.data import find_images_root

    root = find_images_root(d)
    return root, slides.find_originals(root)


def _need_originals() -> tuple[Path, Path]:
    r = _real_roots()
    if r is None:
        pytest.skip("the real dataset is not here (set WBC_DATA_DIR)")
    if r[1] is None:
        pytest.skip(f"no Original_Images/ beside {r[0]}: the originals are needed to recompute slides")
    return r  # type: ignore[return-value]


def _smear(rng, h: int, w: int, cells=()) -> np.ndarray:
    """A synthetic stained smear (RGB): pink red cells on a pale background, purple white cells at ``cells``.

    The red cells are irregular polygons, so that the field is chiral like a real one (a mirrored copy's SIFT
    descriptors differ: mirror handling is then needed to match it).
    """
    img = np.full((h, w, 3), (235, 228, 225), np.uint8)
    for _ in range(int(h * w / 2500)):
        c = np.array([rng.integers(0, w), rng.integers(0, h)])
        ang = np.sort(rng.uniform(0, 2 * np.pi, 6))
        rad = rng.uniform(8, 26, 6)
        poly = (c + np.stack([np.cos(ang) * rad, np.sin(ang) * rad], 1)).astype(np.int32)
        shade = int(rng.integers(-25, 25))
        cv2.fillPoly(img, [poly], (215 + shade, 140 + shade, 150 + shade))
        cv2.fillPoly(img, [(c + (poly - c) // 2).astype(np.int32)], (225 + shade, 170 + shade, 175 + shade))
        if rng.random() < 0.3:
            cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))), 3, (160, 110, 170), -1)
    for y, x in cells:
        cv2.circle(img, (x, y), 38, (170, 150, 210), -1)
        for _ in range(4):
            cv2.circle(img, (x + int(rng.integers(-18, 18)), y + int(rng.integers(-18, 18))), 13, (110, 50, 160), -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.2)
    noise = rng.normal(0, 3, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _save(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


@pytest.fixture(scope="module")
def synthetic_slides(tmp_path_factory) -> Path:
    """Original_Images/ with 5 synthetic 640x480 slides; 1, 2 and 3 are crops of one field (overlapping).

    The field's white cell at (150, 400) is in slides 1 and 2 (same cell); slide 3 sees another one at
    (600, 800) only. Slides 4 and 5 are unrelated fields.
    """
    root = tmp_path_factory.mktemp("originals") / "Original_Images"
    rng = np.random.default_rng(3)
    field = _smear(rng, 700, 940, cells=[(150, 400), (600, 800)])
    _save(root / "BloodImage_00001.jpg", field[0:480, 0:640])
    _save(root / "BloodImage_00002.jpg", field[0:480, 200:840])
    _save(root / "BloodImage_00003.jpg", field[220:700, 300:940])
    _save(root / "BloodImage_00004.jpg", _smear(rng, 480, 640, cells=[(240, 320)]))
    _save(root / "BloodImage_00005.jpg", _smear(rng, 480, 640, cells=[(100, 500)]))
    return root


def _augment(rgb640: np.ndarray, angle: float, shear: float, zoom: float, shift: tuple[float, float],
             hflip: bool, vflip: bool) -> np.ndarray:
    """What the dataset's augmentation did: shrink 2x, then rotate/shear/zoom/shift/flip with black fill."""
    img = cv2.resize(rgb640, (320, 240), interpolation=cv2.INTER_AREA)
    c = np.array([160.0, 120.0])
    a = np.deg2rad(angle)
    lin = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.array([[1, np.tan(np.deg2rad(shear))],
                                                                                  [0, 1]]) * zoom
    m = np.hstack([lin, (c - lin @ c + np.array(shift))[:, None]])
    out = cv2.warpAffine(img, m, (320, 240), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    if hflip:
        out = out[:, ::-1]
    if vflip:
        out = out[::-1]
    return np.ascontiguousarray(out)


# ----------------------------------------------------------------------------- (a)-(c): the shipped files

def test_sample_recomputed_matches_shipped_file():
    """~130 images (TEST_SIMPLE included), fixed seed: the same slide and score as the shipped mapping."""
    images_root, originals = _need_originals()
    m = slides.load_mapping()
    sample = pd.concat([m[m["split"] != "TEST_SIMPLE"].sample(110, random_state=20240),
                        m[m["split"] == "TEST_SIMPLE"].sample(20, random_state=20240)])
    paths = [str(images_root / s / c / f) for s, c, f in zip(sample["split"], sample["class"], sample["file"])]
    got = slides.match_images(paths, list(sample["class"]), originals,
                              slides.find_labels_csv(images_root, originals), jobs=2, progress=False)
    assert got["slide"].tolist() == sample["slide"].tolist()
    np.testing.assert_allclose(got["score"].to_numpy(), sample["score"].to_numpy(), atol=2e-3)
    assert (got["score"] >= slides.ACCEPT_NCC).all()


def test_shipped_file_agrees_with_reference():
    r = _real_roots()
    ref_dir = slides.find_reference_dir(r[0]) if r else None
    if ref_dir is None:
        pytest.skip("slides_reference.csv is not beside the dataset (it ships with the shared copy only)")
    c = slides.compare_with_reference(slides.load_mapping(), slides.load_pairs(), ref_dir)
    assert c["images_compared"] == 12515
    assert c["agreement"] >= 0.999, c["disagreements"][:10]
    assert c["same_cell_partition_equal"]
    assert c["pairs"]["recall"] == 1.0 and c["same_cell_pairs"]["recall"] == 1.0
    assert c["counts"]["TRAIN_cells"] == 259 and c["counts"]["TEST_cells"] == 68
    assert c["counts"]["shared_cells"] == 6


def test_shipped_file_covers_every_file_of_the_dataset():
    r = _real_roots()
    if r is None:
        pytest.skip("the real dataset is not here (set WBC_DATA_DIR)")
    on_disk = set()
    for split in ("TRAIN", "TEST", "TEST_SIMPLE"):
        for cls in CLASSES:
            with os.scandir(r[0] / split / cls) as it:
                on_disk |= {(split, cls, e.name, e.stat().st_size) for e in it if e.name.endswith(".jpeg")}
    m = slides.load_mapping()
    shipped = set(zip(m["split"], m["class"], m["file"], m["size_bytes"]))
    assert shipped == on_disk
    assert m["slide"].notna().all() and m["cell"].notna().all() and m["overlap"].notna().all()


def test_shipped_files_are_well_formed():
    m = slides.load_mapping()
    assert tuple(m.columns) == slides.MAPPING_COLUMNS
    assert str(m["slide"].dtype) == "Int64" and (m["cell"] <= m["slide"]).all() and (m["overlap"] <= m["cell"]).all()
    p = slides.load_pairs()
    assert tuple(p.columns) == slides.PAIR_COLUMNS
    assert (p["slide_a"] < p["slide_b"]).all() and (p["ncc"] >= slides.PAIR_MIN_NCC).all()
    # the clusters in the mapping are the union-find of the shipped pairs
    cells = slides.same_cell_clusters(m["slide"].astype(int), p)
    assert all(cells[int(s)] == int(c) for s, c in zip(m["slide"], m["cell"]))
    # rewriting gives the same bytes
    assert slides.mapping_bytes(m) == slides.MAPPING_FILE.read_bytes()
    assert slides.pairs_bytes(p) == slides.PAIRS_FILE.read_bytes()


def test_provenance_figures_and_table(tmp_path):
    images_root, originals = _need_originals()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wbc_utils.figures import data as figures_data

    m, p = slides.load_mapping(), slides.load_pairs()
    t = figures_data.provenance_table(m)
    assert t.loc["TRAIN", "slides"] == 277 and t.loc["TRAIN", "same_cell_clusters"] == 259
    assert t.loc["TEST", "shared_clusters"] == 6 and t.loc["TEST", "shared_files"] == 202
    assert t.loc["TEST_SIMPLE", "slides"] == 69
    for fig in (figures_data.slide_and_copies_figure(m, images_root, originals, copies=6),
                figures_data.kgroup_figure(m, images_root, "TRAIN", "NEUTROPHIL", 0, n=8),
                figures_data.overlap_figure(p, originals, n=4)):
        assert fig.get_figwidth() <= figures_data.A4_WIDTH
        fig.savefig(tmp_path / "f.png", dpi=60)
        plt.close(fig)
    k0 = m[(m["split"] == "TRAIN") & (m["class"] == "NEUTROPHIL") & m["file"].str.startswith("_0_")]
    assert k0["slide"].nunique() >= 12  # k is not a cell: one (class, k) group holds many slides


# ----------------------------------------------------------------------------- (d): the method, on synthetic data

@pytest.mark.parametrize("hflip,vflip", [(False, False), (True, False), (False, True), (True, True)])
def test_augmented_copy_is_matched_to_its_slide(synthetic_slides, tmp_path, hflip, vflip):
    rgb = cv2.cvtColor(cv2.imread(str(synthetic_slides / "BloodImage_00004.jpg")), cv2.COLOR_BGR2RGB)
    img = _augment(rgb, angle=17, shear=9, zoom=1.07, shift=(-20, 14), hflip=hflip, vflip=vflip)
    p = _save(tmp_path / "any_name.jpg", img)
    big = _save(tmp_path / "enlarged.jpg", cv2.resize(img, (500, 375)))  # another size: resized first
    got = slides.match_images([str(p), str(big)], [None, "NEUTROPHIL"], synthetic_slides, jobs=1, progress=False)
    assert got["slide"].tolist() == [4, 4]
    assert (got["score"] > 0.95).all()
    # the fit uses the slide's mirrored descriptors, mapped back into its frame: many inliers, and the
    # transform holds the reflection (without mirror handling a flipped copy keeps only a few symmetric blobs)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    m, inliers = slides._fit(*slides._features(gray), slides.load_slides(synthetic_slides, 1, False).slides[4])
    assert inliers >= 150
    assert np.sign(np.linalg.det(m[:, :2])) == (-1 if hflip != vflip else 1)


def test_unrelated_and_unreadable_files_get_na(synthetic_slides, tmp_path):
    rng = np.random.default_rng(0)
    noise = _save(tmp_path / "noise.jpg", rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
    other = _save(tmp_path / "other.jpg", cv2.resize(_smear(rng, 480, 640, cells=[(200, 200)]), (320, 240)))
    good = _save(tmp_path / "good.jpg", cv2.resize(
        cv2.cvtColor(cv2.imread(str(synthetic_slides / "BloodImage_00005.jpg")), cv2.COLOR_BGR2RGB), (320, 240)))
    corrupt = tmp_path / "corrupt.jpeg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    truncated = tmp_path / "truncated.jpeg"
    truncated.write_bytes(good.read_bytes()[:300])
    empty = tmp_path / "empty.jpeg"
    empty.write_bytes(b"")
    paths = [noise, other, corrupt, truncated, empty, tmp_path / "missing.jpeg", good]
    got = slides.match_images([str(p) for p in paths], [None] * len(paths), synthetic_slides, jobs=1,
                              progress=False)
    assert got["slide"].isna().tolist() == [True] * 6 + [False]
    assert got["slide"].iloc[-1] == 5
    assert got["score"].iloc[:6].isna().all()


def test_slide_pairs_and_same_cell_on_synthetic_fields(synthetic_slides):
    pairs = slides.find_slide_pairs(synthetic_slides, jobs=1, progress=False)
    found = {(a, b): bool(s) for a, b, s in zip(pairs["slide_a"], pairs["slide_b"], pairs["same_cell"])}
    assert found == {(1, 2): True, (1, 3): False, (2, 3): False}
    row = pairs[(pairs["slide_a"] == 1) & (pairs["slide_b"] == 2)].iloc[0]
    assert row["overlap_frac"] == pytest.approx(440 / 640, abs=0.03)
    assert row["ncc"] > 0.95 and row["inliers"] >= slides.PAIR_MIN_INLIERS


def test_find_originals_layouts(tmp_path):
    images = tmp_path / "blood-cells" / "images"
    (images / "TRAIN").mkdir(parents=True)
    assert slides.find_originals(images) is None
    assert slides.find_labels_csv(images) is None
    orig = tmp_path / "blood-cells" / "Original_Images"
    orig.mkdir()
    assert slides.find_originals(images) is None  # a folder without slides is not one
    (orig / "BloodImage_00000.jpg").write_bytes(b"x")
    assert slides.find_originals(images) == orig
    kaggle = tmp_path / "k" / "dataset2-master" / "dataset2-master" / "images"
    jpeg = tmp_path / "k" / "dataset-master" / "dataset-master" / "JPEGImages"
    kaggle.mkdir(parents=True)
    jpeg.mkdir(parents=True)
    (jpeg / "BloodImage_00007.jpg").write_bytes(b"x")
    (jpeg.parent / "labels.csv").write_text(",Image,Category\n,7,MONOCYTE\n,8,\"NEUTROPHIL, EOSINOPHIL\"\n")
    assert slides.find_originals(kaggle) is None  # the Kaggle archive's tree sits three levels up
    assert slides.find_originals(kaggle.parent.parent) == jpeg
    labels = slides.find_labels_csv(kaggle.parent.parent, jpeg)
    assert slides.class_slides(labels) == {"MONOCYTE": {7}, "NEUTROPHIL": {8}, "EOSINOPHIL": {8}}


# ----------------------------------------------------------------------------- (e): clusters; files and errors

def test_same_cell_clusters_are_transitive_and_named_by_lowest_slide():
    pairs = pd.DataFrame({"slide_a": [248, 242, 5, 7, 9], "slide_b": [249, 249, 7, 9, 10],
                          "same_cell": [True, True, True, False, True]})
    c = slides.same_cell_clusters([248, 5, 7, 9, 10, 11], pairs)
    assert c == {5: 5, 7: 5, 9: 9, 10: 9, 11: 11, 242: 242, 248: 242, 249: 242}
    o = slides.same_cell_clusters([11], pairs, only_same_cell=False)
    assert o[10] == 5 and o[248] == 242 and o[11] == 11


def _tiny_mapping() -> tuple[pd.DataFrame, pd.DataFrame]:
    m = pd.DataFrame({"split": ["TRAIN", "TEST", "TRAIN"], "class": ["MONOCYTE", "EOSINOPHIL", "EOSINOPHIL"],
                      "file": ["_1_2.jpeg", "_0_1.jpeg", "_0_9.jpeg"], "size_bytes": [10, 20, 30],
                      "slide": pd.array([3, 9, None], dtype="Int64"), "score": [0.99871, 0.95, float("nan")],
                      "cell": pd.array([3, 3, None], dtype="Int64"), "overlap": pd.array([3, 3, None], dtype="Int64")})
    p = pd.DataFrame({"slide_a": [3], "slide_b": [9], "ncc": [0.951234], "overlap_frac": [0.5], "inliers": [20],
                      "same_cell": [True]})
    return m, p


def test_write_is_deterministic_and_round_trips(tmp_path):
    m, p = _tiny_mapping()
    a, b = slides.write_mapping(m, p, tmp_path / "one")
    first = (a.read_bytes(), b.read_bytes())
    slides.write_mapping(m.iloc[::-1], p, tmp_path / "one")  # row order does not matter
    assert (a.read_bytes(), b.read_bytes()) == first
    back = slides.load_mapping(a)
    assert back["file"].tolist() == ["_0_1.jpeg", "_0_9.jpeg", "_1_2.jpeg"]  # sorted by split, class, file
    assert back["score"].iloc[2] == 0.9987 and pd.isna(back["slide"].iloc[1])
    assert slides.load_pairs(b)["same_cell"].tolist() == [True]


def test_load_mapping_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.csv.gz.*is missing"):
        slides.load_mapping(tmp_path / "missing.csv.gz")
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="bad.csv.gz.*cannot be read"):
        slides.load_mapping(bad)
    cols = tmp_path / "cols.csv.gz"
    cols.write_bytes(gzip.compress(b"split,class,file\nTRAIN,MONOCYTE,_1_2.jpeg\n"))
    with pytest.raises(DataError, match="cols.csv.gz has columns"):
        slides.load_mapping(cols)
    val = tmp_path / "val.csv.gz"
    val.write_bytes(gzip.compress(b"split,class,file,size_bytes,slide,score,cell,overlap\n"
                                  b"TRAIN,MONOCYTE,_1_2.jpeg,10,abc,0.9,3,3\n"))
    with pytest.raises(DataError, match="val.csv.gz holds a malformed value"):
        slides.load_mapping(val)
    with pytest.raises(DataError, match="pairs.csv"):
        slides.load_pairs(tmp_path / "pairs.csv")


def test_cli_refuses_to_overwrite_a_differing_file_and_checks(tiny_dataset, tmp_path, monkeypatch, capsys):
    from wbc_utils.cli import main

    m, p = _tiny_mapping()
    monkeypatch.setattr(slides, "build_mapping", lambda data_dir=None, jobs=None, progress=True: (m, p))
    out = tmp_path / "out"
    assert main(["slides", "--data-dir", str(tiny_dataset), "--out", str(out)]) == 0
    assert main(["slides", "--data-dir", str(tiny_dataset), "--out", str(out), "--check"]) == 0
    written = (out / "slides.csv.gz").read_bytes()
    m2 = m.copy()
    m2.loc[0, "slide"] = 4
    monkeypatch.setattr(slides, "build_mapping", lambda data_dir=None, jobs=None, progress=True: (m2, p))
    assert main(["slides", "--data-dir", str(tiny_dataset), "--out", str(out), "--check"]) == 1
    assert main(["slides", "--data-dir", str(tiny_dataset), "--out", str(out)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (out / "slides.csv.gz").read_bytes() == written
    assert main(["slides", "--data-dir", str(tiny_dataset), "--out", str(out), "--force"]) == 0
    assert slides.load_mapping(out / "slides.csv.gz")["slide"].tolist()[2] == 4
