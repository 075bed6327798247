"""TensorFlow's start-up noise is kept off standard error, and nothing else is: real warnings, tracebacks, progress
bars and a crashing process's last words all pass."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import budget

ROOT = Path(__file__).resolve().parents[1]
NOISE = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
         b"I0000 00:00:1795692522.235676   12238 port.cc:153] oneDNN custom operations are on.\n")
REAL = b"W0000 00:00:1795692522.235676   12238 gpu_device.cc:2] Cannot dlopen some GPU libraries.\n"


def _run(code: str, tmp_path, env_extra=None):
    import os

    env = {k: v for k, v in os.environ.items() if k != "WBC_TF_VERBOSE"} | (env_extra or {})
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, env=env, timeout=budget(60))


def test_noise_goes_to_the_log_and_everything_else_passes(tmp_path):
    log = tmp_path / "run" / "train.log"
    code = (f"import os, sys\nfrom wbc_utils.tfenv import quiet_tensorflow\nquiet_tensorflow()\n"
            f"os.write(2, {NOISE!r})\nquiet_tensorflow({str(log)!r})\nos.write(2, {NOISE!r} + {REAL!r})\n"
            "sys.stderr.write('decoding 50%\\r'); sys.stderr.flush()\n"
            "print('to stdout')\nraise ValueError('the real error')\n")
    res = _run(code, tmp_path)
    assert res.returncode == 1
    assert b"oneDNN" not in res.stderr and b"absl::InitializeLog" not in res.stderr
    assert REAL in res.stderr and b"decoding 50%\r" in res.stderr
    assert b"ValueError: the real error" in res.stderr and b"Traceback" in res.stderr
    assert log.read_bytes().count(b"oneDNN") == 2  # held until the log was named, then written there


def test_no_deadlock_on_a_large_write_and_an_abort_s_last_words_survive(tmp_path):
    code = ("import os\nfrom wbc_utils.tfenv import quiet_tensorflow\nquiet_tensorflow()\n"
            "os.write(2, b'x' * 300000 + b'\\n')\nos.write(2, b'fatal: check failed\\n')\nos.abort()\n")
    res = _run(code, tmp_path)
    assert res.returncode != 0
    assert res.stderr.endswith(b"fatal: check failed\n") and res.stderr.count(b"x") >= 300000


def test_wbc_tf_verbose_turns_the_filter_off(tmp_path):
    code = f"import os\nfrom wbc_utils.tfenv import quiet_tensorflow\nquiet_tensorflow()\nos.write(2, {NOISE!r})\n"
    assert b"oneDNN" in _run(code, tmp_path, {"WBC_TF_VERBOSE": "1"}).stderr
    assert b"oneDNN" not in _run(code, tmp_path).stderr
