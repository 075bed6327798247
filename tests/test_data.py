"""The data layer: layouts, manifest, source cells, bad input, cache, splits."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
from conftest import CLASSES, make_dataset, real_data_dir, write_image

from wbc_utils.data import (
    build_manifest,
    check_image_size,
    find_images_root,
    grouped_split,
    load_split,
    stratified_subset,
)
from wbc_utils.errors import DataError, ParameterError


@pytest.mark.parametrize("layout", ["images", "kaggle", "direct"])
def test_layouts_are_found(tmp_path, layout):
    root = make_dataset(tmp_path / "d", layout=layout)
    m = build_manifest(root)
    assert len(m.split("TRAIN")) == 4 * 3 * 4
    assert len(m.split("TEST")) == 4 * 2 * 4
    assert len(m.split("TEST_SIMPLE")) == 4 * 2


def test_manifest_rows_and_cells(tiny_dataset):
    m = build_manifest(tiny_dataset)
    f = m.frame
    assert set(f.columns) >= {"path", "class", "label", "split", "cell"}
    assert (f["label"] == f["class"].map({c: i for i, c in enumerate(CLASSES)})).all()
    train = m.split("TRAIN")
    assert train["cell"].nunique() == 12 and m.sources == {"shipped": len(f), "matched": 0, "none": 0}
    assert train.groupby("cell").size().eq(4).all()
    assert sorted(train[train["class"] == "MONOCYTE"]["cell"].unique()) == ["3000", "3001", "3002"]
    assert not f["shared"].any()
    s = m.summary()
    assert s.loc["TEST", ("cells", "NEUTROPHIL")] == 2 and s.loc["TEST", ("slides", "NEUTROPHIL")] == 2


def test_missing_folder_error_names_path_and_fix(tmp_path):
    with pytest.raises(DataError, match="does not exist.*WBC_DATA_DIR"):
        find_images_root(tmp_path / "nope")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty"):
        find_images_root(tmp_path / "empty")


def test_env_var_is_used(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "d")
    monkeypatch.setenv("WBC_DATA_DIR", str(root))
    assert build_manifest().images_root == root / "images"


def test_missing_test_split(tmp_path):
    root = make_dataset(tmp_path / "d", splits=("TRAIN",))
    with pytest.raises(DataError, match="split TEST is missing"):
        build_manifest(root)


def test_missing_class_folder(tiny_dataset):
    import shutil

    shutil.rmtree(tiny_dataset / "images" / "TEST" / "MONOCYTE")
    with pytest.raises(DataError, match="MONOCYTE"):
        build_manifest(tiny_dataset)


def test_empty_class_folder(tiny_dataset):
    d = tiny_dataset / "images" / "TRAIN" / "LYMPHOCYTE"
    for f in d.iterdir():
        f.unlink()
    with pytest.raises(DataError, match="holds no images"):
        build_manifest(tiny_dataset)


def test_class_folders_match_case_insensitively(tiny_dataset):
    d = tiny_dataset / "images" / "TRAIN"
    (d / "MONOCYTE").rename(d / "Monocyte")
    m = build_manifest(tiny_dataset)
    assert (m.split("TRAIN")["class"] == "MONOCYTE").sum() == 12


def test_misspelled_class_folder_is_an_error_naming_it(tiny_dataset):
    d = tiny_dataset / "images" / "TRAIN"
    (d / "MONOCYTE").rename(d / "MONOCYT")
    with pytest.raises(DataError, match="MONOCYTE.*misspelled"):
        build_manifest(tiny_dataset)


def test_unknown_class_folder_is_skipped_and_listed(tiny_dataset):
    write_image(tiny_dataset / "images" / "TRAIN" / "BASOPHIL" / "_0_1.jpeg", 0, np.random.default_rng(0))
    m = build_manifest(tiny_dataset)
    assert any("BASOPHIL" in s.path and "unknown class" in s.reason for s in m.skipped)
    assert "BASOPHIL" not in set(m.frame["class"])


def test_non_image_files_are_skipped_and_counted(tiny_dataset):
    d = tiny_dataset / "images" / "TRAIN" / "EOSINOPHIL"
    (d / ".DS_Store").write_bytes(b"\0\0")
    (d / "Thumbs.db").write_bytes(b"x")
    (d / "notes.txt").write_text("hello")
    m = build_manifest(tiny_dataset)
    reasons = {os.path.basename(s.path): s.reason for s in m.skipped}
    assert reasons["notes.txt"].startswith("not an image")
    assert ".DS_Store" in reasons and "Thumbs.db" in reasons
    assert len(m.split("TRAIN")) == 48


def test_corrupt_and_empty_images_are_skipped_when_decoded(tiny_dataset, cache_dir):
    d = tiny_dataset / "images" / "TEST" / "NEUTROPHIL"
    (d / "_0_1.jpeg").write_bytes((d / "_0_1000.jpeg").read_bytes()[:100])  # truncated
    (d / "_1_2.jpeg").write_bytes(b"")  # zero bytes
    m = build_manifest(tiny_dataset)
    s = load_split(m, "TEST", (32, 40), progress=False)
    assert len(s) == 32
    reasons = {os.path.basename(x.path): x.reason for x in m.skipped}
    assert "0 bytes" in reasons["_1_2.jpeg"]
    assert "cannot decode" in reasons["_0_1.jpeg"]
    # the cached load reports the same skips
    m2 = build_manifest(tiny_dataset)
    s2 = load_split(m2, "TEST", (32, 40), progress=False)
    assert len(s2) == 32 and len(m2.skipped) == 2


def test_png_grayscale_and_odd_sizes_are_converted(tiny_dataset, cache_dir):
    d = tiny_dataset / "images" / "TRAIN" / "EOSINOPHIL"
    rng = np.random.default_rng(1)
    write_image(d / "_9_1.png", 0, rng, fmt="PNG")
    write_image(d / "_9_2.jpeg", 0, rng, mode="L")
    write_image(d / "_9_3.jpeg", 0, rng, size=(64, 50))
    m = build_manifest(tiny_dataset)
    s = load_split(m, "TRAIN", (32, 40), progress=False)
    assert s.images.shape == (51, 32, 40, 3) and s.images.dtype == np.uint8
    assert s.frame["cell"].str.startswith("?").sum() == 3  # not in the dataset's mapping: cells of their own


def test_file_without_a_known_slide_is_its_own_cell_with_one_warning(tiny_dataset, caplog):
    """Never grouped by k again: an unknown file is its own cell, and the warning names how many there are."""
    import logging

    from wbc_utils import data as data_mod

    data_mod._WARNED.clear()
    d = tiny_dataset / "images" / "TRAIN" / "EOSINOPHIL"
    write_image(d / "_0_77.jpeg", 0, np.random.default_rng(2))   # k = 0, like its neighbours
    write_image(d / "renamed.jpeg", 0, np.random.default_rng(3))
    with caplog.at_level(logging.WARNING):
        m = build_manifest(tiny_dataset)
        build_manifest(tiny_dataset)
    rows = m.frame[m.frame["path"].str.endswith(("_0_77.jpeg", "renamed.jpeg"))]
    assert (rows["source"] == "none").all() and rows["slide"].isna().all()
    assert list(rows["cell"]) == ["?" + r for r in rows["relpath"]]
    assert m.sources["none"] == 2
    warnings = [r.message for r in caplog.records if "not in the shipped slide mapping" in r.message]
    assert len(warnings) == 1 and warnings[0].startswith("2 file(s)") and "Original_Images" in warnings[0]


def test_a_changed_file_is_not_taken_for_the_mapped_one(tiny_dataset):
    d = tiny_dataset / "images" / "TRAIN" / "EOSINOPHIL"
    victim = sorted(d.iterdir())[0]
    write_image(victim, 0, np.random.default_rng(9), size=(80, 64))  # same name, other content and size
    m = build_manifest(tiny_dataset)
    row = m.frame[m.frame["path"] == str(victim)].iloc[0]
    assert row["source"] == "none" and row["cell"].startswith("?")


@pytest.mark.skipif(real_data_dir() is None, reason="the real dataset is not available (set WBC_DATA_DIR)")
def test_real_dataset_sources_are_true_cells():
    """The shipped mapping gives the real dataset its slides and same-cell clusters: 259 TRAIN cells, 68 TEST
    cells, 6 in both; k-groups are not cells."""
    m = build_manifest(real_data_dir())
    f = m.frame
    assert m.sources["shipped"] == len(f) == 12515
    per = f.groupby("split").agg(slides=("slide", "nunique"), cells=("cell", "nunique"))
    assert per.loc["TRAIN"].tolist() == [277, 259] and per.loc["TEST"].tolist() == [71, 68]
    assert per.loc["TEST_SIMPLE", "slides"] == 69
    test = f[f["split"] == "TEST"]
    assert test.loc[test["shared"], "cell"].nunique() == 6 and int(test["shared"].sum()) == 202
    train = f[f["split"] == "TRAIN"]
    assert train.groupby(["class", "k"])["slide"].nunique().min() >= 10  # a k-group mixes many slides


def test_symlinked_duplicate_is_listed_once(tiny_dataset):
    d = tiny_dataset / "images" / "TRAIN" / "EOSINOPHIL"
    os.symlink(d / "_0_1000.jpeg", d / "_0_99999.jpeg")
    m = build_manifest(tiny_dataset)
    assert len(m.split("TRAIN")) == 48
    assert any("symlink" in s.reason for s in m.skipped)


def test_cache_is_keyed_by_size_and_reused(tiny_dataset, cache_dir):
    m = build_manifest(tiny_dataset)
    a = load_split(m, "TRAIN", (32, 40), progress=False)
    b = load_split(m, "TRAIN", (16, 20), progress=False)
    assert a.images.shape[1:3] == (32, 40) and b.images.shape[1:3] == (16, 20)
    files = sorted(p.name for p in cache_dir.rglob("*.npy"))
    assert files == ["TRAIN_16x20.npy", "TRAIN_32x40.npy"]
    t = time.perf_counter()
    c = load_split(build_manifest(tiny_dataset), "TRAIN", (32, 40), progress=False)
    assert time.perf_counter() - t < 5
    from wbc_utils.data import DiskArray

    assert isinstance(c.images, DiskArray)  # read on demand, not decoded again
    np.testing.assert_array_equal(np.asarray(a.images), np.asarray(c.images))


def test_disk_array_reads_like_the_array_it_stores(tmp_path):
    from wbc_utils.data import DiskArray

    ref = np.random.default_rng(0).integers(0, 255, (7, 4, 5, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", ref)
    d = DiskArray(tmp_path / "x.npy")
    assert d.shape == ref.shape and len(d) == 7
    np.testing.assert_array_equal(d[2], ref[2])
    np.testing.assert_array_equal(d[1:4], ref[1:4])
    np.testing.assert_array_equal(d[[5, 0, 5]], ref[[5, 0, 5]])
    np.testing.assert_array_equal(d[3, 1], ref[3, 1])
    sub = d.subset([6, 2, 4])
    np.testing.assert_array_equal(np.asarray(sub), ref[[6, 2, 4]])
    np.testing.assert_array_equal(sub[1:], ref[[2, 4]])
    import pickle

    np.testing.assert_array_equal(np.asarray(pickle.loads(pickle.dumps(sub))), ref[[6, 2, 4]])
    (tmp_path / "t.npy").write_bytes((tmp_path / "x.npy").read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        DiskArray(tmp_path / "t.npy")


def test_image_size_check():
    assert check_image_size([60, 80]) == (60, 80)
    with pytest.raises(ParameterError, match="16 pixels"):
        check_image_size([8, 80])
    with pytest.raises(ParameterError, match="two integers"):
        check_image_size(["a", 80])


def test_grouped_split_never_shares_a_cell(tiny_dataset):
    m = build_manifest(tiny_dataset)
    train = m.split("TRAIN")
    for seed in range(5):
        tr, va = grouped_split(train, 0.34, seed)
        assert set(train["cell"].iloc[tr]).isdisjoint(set(train["cell"].iloc[va]))
        assert len(tr) + len(va) == len(train)
        assert set(train["class"].iloc[va]) == set(CLASSES)  # stratified: every class held out


@pytest.mark.skipif(real_data_dir() is None, reason="the real dataset is not available (set WBC_DATA_DIR)")
def test_grouped_split_of_the_real_train_shares_no_slide():
    """Split by same-cell cluster, no held-out image has its slide (or a slide of the same cell) in the
    training part; split by k, nearly all of them would."""
    train = build_manifest(real_data_dir()).split("TRAIN")
    tr, va = grouped_split(train, 0.2, seed=0)
    assert not train["slide"].iloc[va].isin(train["slide"].iloc[tr]).any()
    assert not train["cell"].iloc[va].isin(train["cell"].iloc[tr]).any()
    groups = train[["class", "k"]].drop_duplicates().sample(frac=0.2, random_state=0)
    by_k = train.set_index(["class", "k"]).index.isin(groups.set_index(["class", "k"]).index)
    assert train.loc[by_k, "slide"].isin(train.loc[~by_k, "slide"]).mean() > 0.9


def test_grouped_split_rejects_bad_fraction(tiny_dataset):
    with pytest.raises(ParameterError, match="val_fraction"):
        grouped_split(build_manifest(tiny_dataset).split("TRAIN"), 1.5, 0)


def test_stratified_subset(tiny_dataset):
    train = build_manifest(tiny_dataset).split("TRAIN")
    idx = stratified_subset(train, 20, 0)
    assert len(idx) == len(set(idx)) == 20
    assert train["label"].iloc[idx].value_counts().min() == 5
    with pytest.raises(ParameterError, match="train_subset=999 is larger"):
        stratified_subset(train, 999, 0)


def test_unknown_files_are_matched_when_the_originals_are_there_and_remembered(tiny_dataset, cache_dir,
                                                                            monkeypatch, tmp_path):
    """A file the mapping does not know is matched to its slide on the fly (here a stand-in matcher), joins that
    slide's same-cell cluster, and is not matched again the next time."""
    import pandas as pd

    from wbc_utils import slides

    originals = tmp_path / "Original_Images"
    originals.mkdir()
    calls = []

    def fake_match(paths, classes, originals_dir, **kw):
        calls.append(list(paths))
        return pd.DataFrame({"slide": pd.array([9999] * len(paths), dtype="Int64"), "score": [0.99] * len(paths)})

    monkeypatch.setattr(slides, "find_originals", lambda root: originals)
    monkeypatch.setattr(slides, "match_images", fake_match)
    monkeypatch.setattr(slides, "load_pairs", lambda: pd.DataFrame(
        {"slide_a": [1000], "slide_b": [9999], "ncc": [0.95], "overlap_frac": [0.5], "inliers": [30],
         "same_cell": [True]}))
    d = tiny_dataset / "images" / "TEST" / "EOSINOPHIL"
    write_image(d / "renamed.jpeg", 0, np.random.default_rng(5))
    m = build_manifest(tiny_dataset)
    row = m.frame[m.frame["path"].str.endswith("renamed.jpeg")].iloc[0]
    assert row["source"] == "matched" and row["slide"] == 9999 and row["cell"] == "1000"
    assert row["shared"]  # its cluster holds TRAIN's slide 1000: a TEST image of a cell seen in training
    assert m.sources["matched"] == 1 and len(calls) == 1
    build_manifest(tiny_dataset)
    assert len(calls) == 1, "a matched file is remembered in the cache, not matched again"
