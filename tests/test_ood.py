"""predict's out-of-distribution flag: calibrated on TRAIN, quiet on TEST, loud on shifted images; every image
format Pillow reads."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import real_data_dir
from PIL import Image, ImageFilter

from wbc_utils import ood


def test_features_see_colour_blur_and_magnification():
    rng = np.random.default_rng(0)
    field = np.full((240, 320, 3), (200, 170, 180), np.uint8)
    field[100:140, 140:180] = (90, 40, 170)  # a stained nucleus
    field = np.clip(field + rng.normal(0, 8, field.shape), 0, 255).astype(np.uint8)
    f = ood.image_features(field)
    gray = ood.image_features(np.repeat(field.mean(2, keepdims=True), 3, 2).astype(np.uint8))
    blurred = ood.image_features(np.asarray(Image.fromarray(field).filter(ImageFilter.GaussianBlur(3))))
    zoomed = ood.image_features(np.asarray(Image.fromarray(field[90:150, 130:190]).resize((320, 240))))
    assert len(f) == len(ood.FEATURES)
    assert abs(gray[0] - gray[2]) < 1e-3 and gray[6] == 0  # no colour, no stain
    assert blurred[7] < f[7] - 0.5  # sharpness drops
    assert zoomed[6] > 5 * f[6]  # a tight crop is mostly nucleus


def test_the_black_fill_of_an_augmented_copy_is_not_part_of_the_statistics():
    """TRAIN's images are augmented copies with black fill where a rotation or shift moved the field; a new
    microscope image has none. The statistics must describe the smear, not the fill."""
    rng = np.random.default_rng(2)
    field = np.clip(rng.normal((200, 170, 180), 12, (240, 320, 3)), 0, 255).astype(np.uint8)
    field[100:140, 140:180] = (90, 40, 170)
    filled = field.copy()
    filled[:60, :80] = 0  # a corner of fill
    filled[-40:, :] = 0
    a, b = ood.image_features(field), ood.image_features(filled)
    assert np.allclose(a[:6], b[:6], atol=0.01) and abs(a[7] - b[7]) < 0.05


def test_reference_flags_about_its_tail_and_says_why():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(4000, 8))
    logits = rng.normal(size=(4000, 4)) * 3
    ref = ood.fit_reference(feats, logits)
    flagged, _ = ood.flag(ref, feats, logits)
    assert 0.004 <= flagged.mean() <= 0.011  # two tests, each at 0.5% of TRAIN
    new = rng.normal(size=(500, 8))
    assert ood.flag(ref, new, rng.normal(size=(500, 4)) * 3)[0].mean() < 0.03  # the same distribution: rarely
    shifted, why = ood.flag(ref, new + 4, rng.normal(size=(500, 4)) * 3)
    assert shifted.mean() > 0.95 and "image statistics unlike TRAIN's" in why[0]
    flat, why = ood.flag(ref, new, np.full((500, 4), -5.0))  # every score low: no class fits, high energy
    assert flat.mean() > 0.5 and any("no class fits" in w for w in why)


@pytest.mark.slow
@pytest.mark.skipif(real_data_dir() is None, reason="needs the real dataset (WBC_DATA_DIR)")
def test_shifted_test_images_are_flagged_far_more_often_than_test(tmp_path):
    """Synthetic shifts made from TEST images, written in the formats microscopy software uses."""
    from wbc_utils.cellcrop import locate_cell
    from wbc_utils.data import build_manifest, find_images_root, stratified_subset
    from wbc_utils.predict import predict_files

    test = build_manifest(real_data_dir()).split("TEST")
    idx = stratified_subset(test, 32, 1)
    shifts = {
        "test": lambda im, a: im,
        "tight_crop": lambda im, a: Image.fromarray(_crop(a, locate_cell(a))).resize((320, 240)),
        "stain": lambda im, a: Image.fromarray(a[..., [2, 0, 1]]),
        "blur": lambda im, a: im.filter(ImageFilter.GaussianBlur(3)),
        "gray": lambda im, a: im.convert("L").convert("RGB"),
    }
    formats = {"test": "bmp", "tight_crop": "tif", "stain": "png", "blur": "jpg", "gray": "tiff"}
    for name, make in shifts.items():
        (tmp_path / name).mkdir()
        for j, i in enumerate(idx):
            im = Image.open(test["path"].iloc[i]).convert("RGB").resize((320, 240))
            make(im, np.asarray(im)).save(tmp_path / name / f"{j}.{formats[name]}")
    rates = {}
    for name in shifts:
        f = predict_files([tmp_path / name], data_dir=real_data_dir())
        assert (f["error"] == "").all() and len(f) == len(idx), f[f["error"] != ""]
        rates[name] = float(f["ood"].astype(bool).mean())
    assert rates["test"] <= 0.15, rates
    simple = predict_files([find_images_root(real_data_dir()) / "TEST_SIMPLE"], data_dir=real_data_dir())
    assert simple["ood"].astype(bool).mean() <= 0.25  # the lab's un-augmented originals are not "unlike TRAIN"
    for name in shifts:
        if name != "test":
            assert rates[name] >= max(0.6, 4 * rates["test"]), rates


def _crop(a: np.ndarray, loc) -> np.ndarray:
    cy, cx, _ = loc
    y0, x0 = max(0, cy - 45), max(0, cx - 45)
    return a[y0:y0 + 90, x0:x0 + 90]
