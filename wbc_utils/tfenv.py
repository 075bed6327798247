"""TensorFlow set-up for a small CPU: import it configured, seed it, pick precision.

TensorFlow's oneDNN kernels are what make convolutions fast on x86 CPUs, but
TF 2.21 leaves them off on CPUs without AVX-512 (this project's 2-core machines
among them). Measured here: 60x80 training went from about 195 to about 620
images/s with ``TF_ENABLE_ONEDNN_OPTS=1`` (see ``benchmarks/``). We turn them on
unless the user set the variable.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .config import threads as default_threads

_CONFIGURED = False

#: Set to 1 to see TensorFlow's C++ start-up lines on the console again.
TF_VERBOSE = "WBC_TF_VERBOSE"

#: What TensorFlow's C++ side writes straight to file descriptor 2 on every start, whatever
#: ``TF_CPP_MIN_LOG_LEVEL`` says (absl logs before it is initialised), and the warning every local Jupyter kernel
#: prints when papermill starts it (local TCP, no encryption): informational lines, not problems. C++ warnings
#: other than the known start-up ones, errors, and anything about CUDA devices pass through.
NOISE = re.compile(
    r"^(\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
    r"|W\d{4} [\d:.]+ .*(Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered"
    r"|TF-TRT Warning)"
    r"|.*(This TensorFlow binary is optimized|To enable the following instructions"
    r"|rebuild TensorFlow with the appropriate compiler flags))")

#: A line the process writes to its own standard error to tell the filter where noise now goes.
_LOG_MARK = b"\x1e\x1ewbc-log:"

#: The filter runs as a separate process, so that it never needs this process's GIL to drain the pipe (a C
#: extension writing a lot while holding it cannot deadlock), and so that what a crashing process writes last (an
#: abort message, a traceback) is still forwarded after it is gone.
_FILTER = r"""
import os, re, sys
noise, real, mark = re.compile(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode("latin-1")
log, pending, buf = None, [], b""
def out(line):
    global log, pending
    if mark in line:
        before, _, rest = line.partition(mark)
        if before:
            out(before + b"\n")
        log = rest.strip().decode("utf-8", "replace") or None
        if log and pending:
            try:
                with open(log, "ab") as f:
                    f.writelines(pending)
            except OSError:
                pass
            pending = []
        return
    if noise.match(line.decode("utf-8", "replace")):
        if log is None:
            pending = (pending + [line])[-500:]
            return
        try:
            with open(log, "ab") as f:
                f.write(line)
            return
        except OSError:
            return
    os.write(real, line)
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    buf += chunk
    *lines, buf = buf.split(b"\n")
    for line in lines:
        out(line + b"\n")
    if b"\r" in buf:  # a progress bar redraws its line without ending it: show it now
        head, _, buf = buf.rpartition(b"\r")
        os.write(real, head + b"\r")
if buf:
    out(buf)
"""

_FILTER_PROC: subprocess.Popen | None = None


def quiet_tensorflow(log_path: str | os.PathLike | None = None) -> None:
    """Keep TensorFlow's C++ start-up lines off the console (and out of notebooks): they go to ``log_path``
    (a run's ``train.log``) once one is given, held until then. Every other line of standard error passes
    unchanged; child processes (the kernels a study starts) inherit the filter. ``WBC_TF_VERBOSE=1`` turns it off."""
    global _FILTER_PROC
    if os.environ.get(TF_VERBOSE, "") not in ("", "0"):
        return
    if _FILTER_PROC is None or _FILTER_PROC.poll() is not None:
        try:
            sys.stderr.flush()
            real = os.dup(2)
            _FILTER_PROC = subprocess.Popen(
                [sys.executable, "-c", _FILTER, NOISE.pattern, str(real), _LOG_MARK.decode("latin-1")],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=real, pass_fds=(real,),
                start_new_session=True)
            os.dup2(_FILTER_PROC.stdin.fileno(), 2)
            _FILTER_PROC.stdin.close()  # fd 2 now holds the pipe; the filter ends when every writer has closed it
            os.close(real)
        except OSError:  # no file descriptor 2 to filter (an embedded interpreter): leave it
            _FILTER_PROC = None
            return
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        os.write(2, _LOG_MARK + str(Path(log_path).resolve()).encode() + b"\n")


def import_tf(threads: int | None = None):
    """Import TensorFlow with this project's CPU settings; returns the module."""
    global _CONFIGURED
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet_tensorflow()
    import tensorflow as tf

    if not _CONFIGURED:
        tf.get_logger().setLevel("ERROR")  # retracing notices etc.; errors still show
        n = threads or default_threads()
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, n))
        except RuntimeError:  # already initialised by the caller: keep theirs
            pass
        _CONFIGURED = True
    return tf


def gpus() -> list[str]:
    """The GPUs TensorFlow sees (empty on this project's CPU machines)."""
    tf = import_tf()
    return [d.name for d in tf.config.list_physical_devices("GPU")]


def device_description() -> str:
    """What trained a run, for its metrics and the report's software line: the GPU's name, or the CPU's."""
    tf = import_tf()
    found = tf.config.list_physical_devices("GPU")
    if found:
        details = tf.config.experimental.get_device_details(found[0])
        return f"GPU: {details.get('device_name', found[0].name)}" + (f" (x{len(found)})" if len(found) > 1 else "")
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "unknown CPU"
    kind = cpu_kind()
    return f"CPU: {model} ({os.cpu_count()} cores{', ' + kind if kind else ''})"


def cpu_kind() -> str:
    """The vector instructions that set a CPU's training speed here: 'AVX-512, bfloat16', 'AVX-512', 'AVX2' or
    '' (unknown). The same code runs 2-2.5x slower on the AVX2 kind: timings compare within one kind only."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")),
                     [])
    except OSError:
        return ""
    if "avx512f" in flags:
        return "AVX-512, bfloat16" if cpu_supports_bf16() else "AVX-512"
    return "AVX2" if "avx2" in flags else ""


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bfloat16 arithmetic (AVX512_BF16 or AMX)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def set_precision(precision: str) -> str:
    """Set the Keras dtype policy: 'float32', 'mixed_bfloat16', 'mixed_float16', or 'auto'.

    'auto' picks mixed_float16 on a GPU, and on a CPU mixed_bfloat16 only where it computes bfloat16
    natively; without it, bfloat16 is emulated and was measured 10x slower here.
    Returns the policy actually set.
    """
    import keras

    if precision == "auto":
        precision = ("mixed_float16" if gpus() else
                     "mixed_bfloat16" if cpu_supports_bf16() else "float32")
    keras.mixed_precision.set_global_policy(precision)
    return precision


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and TensorFlow; make TF ops deterministic on CPU."""
    tf = import_tf()
    import keras

    keras.utils.set_random_seed(int(seed))
    if deterministic:
        tf.config.experimental.enable_op_determinism()
