"""Prediction on new images, shipping a model, and the look-inside tools (Grad-CAM, galleries)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wbc_utils import CLASSES
from wbc_utils.artifacts import write_json

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """An untrained wbcnet saved like a finished run: model.keras, params.json, metrics.json."""
    from wbc_utils.model import build_model
    from wbc_utils.params import RunParams

    d = tmp_path_factory.mktemp("run")
    p = RunParams(arch="wbcnet", view="cell", image_size=[32, 32], tta=True, width=4, input_scaling="unit")
    model = build_model(p.image_size, p.arch, p.input_scaling, width=p.width)
    model.save(d / "model.keras")
    write_json(d / "params.json", p.to_dict())
    write_json(d / "metrics.json", {"test_accuracy": 0.5, "test_accuracy_ci": [0.4, 0.6]})
    return d


def smear(path, size=(320, 240), fmt="JPEG"):
    rng = np.random.default_rng(0)
    img = rng.integers(150, 220, (size[1], size[0], 3)).astype(np.uint8)
    img[size[1] // 3:size[1] // 2, size[0] // 3:size[0] // 2] = (120, 60, 200)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, fmt)
    return path


def test_predict_files_classifies_good_files_and_reports_bad_ones(tiny_run, tmp_path):
    from wbc_utils.predict import predict_files

    smear(tmp_path / "imgs" / "a.jpg")
    smear(tmp_path / "imgs" / "sub" / "b.png", size=(640, 480), fmt="PNG")  # other size, other format, nested
    (tmp_path / "imgs" / "notes.txt").write_text("not an image, and not an image name: skipped")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    frame = predict_files([tmp_path / "imgs", bad, tmp_path / "missing.png"], tiny_run)
    assert list(frame["file"].map(lambda f: f.rsplit("/", 1)[-1])) == ["a.jpg", "b.png", "broken.jpg", "missing.png"]
    ok = frame[frame["error"] == ""]
    assert len(ok) == 2 and set(ok["predicted"]) <= set(CLASSES)
    assert np.allclose(ok[[f"p_{c}" for c in CLASSES]].sum(1), 1.0, atol=1e-5)
    errors = dict(zip(frame["file"].map(lambda f: f.rsplit("/", 1)[-1]), frame["error"]))
    assert "cannot decode" in errors["broken.jpg"] and "no such file" in errors["missing.png"]


def test_predict_cli_writes_csv_and_exits_1_when_a_file_failed(tiny_run, tmp_path, capsys):
    from wbc_utils.cli import main

    smear(tmp_path / "a.jpg")
    (tmp_path / "bad.png").write_bytes(b"")
    out = tmp_path / "pred.csv"
    rc = main(["predict", str(tiny_run), str(tmp_path / "a.jpg"), str(tmp_path / "bad.png"), "--csv", str(out)])
    assert rc == 1
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 2 and table["error"].iloc[1] == "empty file (0 bytes)"
    assert "bad.png" in capsys.readouterr().err
    rc = main(["predict", "--model", str(tiny_run), str(tmp_path / "a.jpg")])
    shown = capsys.readouterr().out
    assert rc == 0 and "not a diagnostic tool" in shown and "a.jpg" in shown


def test_without_a_model_the_shipped_one_is_used_or_the_error_says_what_to_do(tmp_path, monkeypatch):
    from wbc_utils import predict
    from wbc_utils.errors import DataError

    monkeypatch.setattr(predict, "SHIPPED_MODEL", tmp_path / "models" / "best")
    with pytest.raises(DataError, match="PROFILE=best"):
        predict.default_model()


def test_ship_model_refuses_to_replace_another_model(tiny_run, tmp_path):
    from wbc_utils.errors import RunExistsError
    from wbc_utils.predict import ship_model
    from wbc_utils.saliency import load_model

    dest = ship_model(tiny_run, tmp_path / "best")
    assert (dest / "model.keras").exists() and load_model(dest).view == "cell"
    assert ship_model(tiny_run, dest) == dest  # the same model again: nothing to do
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.keras").write_bytes((tiny_run / "model.keras").read_bytes() + b"\0")
    for f in ("params.json", "metrics.json"):
        (other / f).write_bytes((tiny_run / f).read_bytes())
    with pytest.raises(RunExistsError, match="--force"):
        ship_model(other, dest)
    ship_model(other, dest, force=True)


def test_grad_cam_maps_are_normalised_and_input_sized(tiny_run):
    from wbc_utils.saliency import first_layer_filters, grad_cam, load_model

    run = load_model(tiny_run)
    x = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    cams, scores = grad_cam(run.model, x)
    assert cams.shape == (3, 32, 32) and scores.shape == (3, 4)
    assert cams.min() >= 0 and cams.max() <= 1 + 1e-6
    k = first_layer_filters(run.model)
    assert k.shape == (4, 3, 3, 3) and k.min() >= 0 and k.max() <= 1


def test_confidently_wrong_keeps_one_image_per_cell_most_confident_first():
    from wbc_utils.saliency import confidently_wrong

    rows = []
    for i, (cell, cls, s) in enumerate([("A/1", "EOSINOPHIL", [0, 5, 0, 0]), ("A/1", "EOSINOPHIL", [0, 9, 0, 0]),
                                        ("B/2", "MONOCYTE", [3, 0, 0, 0]), ("C/3", "LYMPHOCYTE", [0, 4, 0, 0])]):
        rows.append({"split": "TEST", "relpath": f"x{i}", "class": cls, "label": CLASSES.index(cls), "cell": cell,
                     "pred": int(np.argmax(s)), **{f"score_{c}": v for c, v in zip(CLASSES, s)}})
    wrong = confidently_wrong(pd.DataFrame(rows), k=5)
    assert list(wrong["relpath"]) == ["x1", "x2"]  # x1 beats its own cell's x0; C/3 is right
