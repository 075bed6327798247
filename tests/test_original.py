"""The 2020 artifacts: log parsing and checkpoint loading (with the shared copy when present)."""
from __future__ import annotations

import pytest
from conftest import SHARED_ORIGINAL

from wbc_utils.original import find_original, load_original_model, parse_log

needs_original = pytest.mark.skipif(not (SHARED_ORIGINAL / "checkpoints").is_dir(),
                                    reason="the 2020 files are not beside the project")


def test_parse_log_on_a_crafted_log(tmp_path):
    p = tmp_path / "x.log"
    p.write_text("Epoch 1/2\n9920/9957 [===>.] - ETA: 0s - loss: 1.0 - accuracy: 0.1\n"
                 "9957/9957 [====] - 11s 1ms/sample - loss: 0.8685 - accuracy: 0.2246 - val_loss: 0.5454 - "
                 "val_accuracy: 0.2356\n"
                 "9957/9957 [====] - 7s - loss: 7.7630e-07 - accuracy: 1.0000 - val_loss: 6.4434 - "
                 "val_accuracy: 0.6880\n")
    f = parse_log(p)
    assert list(f["epoch"]) == [1, 2]
    assert f["val_accuracy"].tolist() == [0.2356, 0.688]
    assert f["loss"].iloc[1] == pytest.approx(7.763e-07)
    (tmp_path / "empty.log").write_text("nothing\n")
    with pytest.raises(ValueError, match="no epoch summary lines"):
        parse_log(tmp_path / "empty.log")


def test_missing_files_are_reported_as_missing(tmp_path):
    found = find_original(tmp_path)
    assert all(v["checkpoint"] is None and v["log"] is None for v in found.values())
    with pytest.raises(FileNotFoundError, match="no TensorFlow checkpoint"):
        load_original_model(tmp_path / "nope.ckpt")


@needs_original
def test_shared_logs_final_values():
    found = find_original(SHARED_ORIGINAL)
    finals = {k: parse_log(v["log"])["val_accuracy"].iloc[-1] for k, v in found.items()}
    assert finals == {"crossentropy": 0.6880, "mse": 0.2465, "huber": 0.2224}
    assert all(len(parse_log(v["log"])) == 100 for v in found.values())


@needs_original
def test_shared_checkpoints_load_into_the_paper_model():
    import numpy as np

    found = find_original(SHARED_ORIGINAL)
    model = load_original_model(found["crossentropy"]["checkpoint"])
    assert model.count_params() == 150_012
    k = model.get_layer("conv1_1").kernel
    assert np.abs(np.asarray(k)).sum() > 0
