"""TensorFlow set-up for a small CPU: import it configured, seed it, pick precision.

TensorFlow's oneDNN kernels are what make convolutions fast on x86 CPUs, but
TF 2.21 leaves them off on CPUs without AVX-512 (this project's 2-core machines
among them). Measured here: 60x80 training went from about 195 to about 620
images/s with ``TF_ENABLE_ONEDNN_OPTS=1`` (see ``benchmarks/``). We turn them on
unless the user set the variable.
"""
from __future__ import annotations

import atexit
import os
import re
import threading
from pathlib import Path

from .config import threads as default_threads

_CONFIGURED = False

#: Set to 1 to see TensorFlow's C++ start-up lines on the console again.
TF_VERBOSE = "WBC_TF_VERBOSE"

#: What TensorFlow's C++ side writes straight to file descriptor 2 on every start, whatever
#: ``TF_CPP_MIN_LOG_LEVEL`` says (absl logs before it is initialised), and the warning every local Jupyter kernel
#: prints when papermill starts it (local TCP, no encryption): informational lines, not problems.
NOISE = re.compile(
    r"^(\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [\w.]+:\d+\] "
    r"|.*(oneDNN custom operations are on|This TensorFlow binary is optimized|To enable the following instructions"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered|TF-TRT Warning"
    r"|Could not find cuda drivers|failed call to cuInit|rebuild TensorFlow with the appropriate compiler flags))")


class _StderrFilter:
    """File descriptor 2 through a pipe: TensorFlow's noise lines go to a log file, every other line goes on
    to the real standard error unchanged (in a terminal, a papermill kernel or a Jupyter notebook alike).
    Child processes (the kernels a study starts) inherit the pipe, so their start-up lines are filtered too."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log_path: Path | None = None
        self.pending: list[bytes] = []
        self.real = os.dup(2)
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
        self.reader = os.fdopen(r, "rb", buffering=0)
        self.thread = threading.Thread(target=self._pump, name="wbc-stderr-filter", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    def _pump(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self.reader.read(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                self._line(line + b"\n")
        if buf:
            self._line(buf)

    def _line(self, line: bytes) -> None:
        if NOISE.match(line.decode("utf-8", "replace")):
            with self.lock:
                if self.log_path is None:
                    self.pending = (self.pending + [line])[-500:]
                    return
                try:
                    with open(self.log_path, "ab") as f:
                        f.write(line)
                    return
                except OSError:
                    return
        try:
            os.write(self.real, line)
        except OSError:
            pass

    def set_log(self, path: Path | None) -> None:
        with self.lock:
            self.log_path = path
            if path is not None and self.pending:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with open(path, "ab") as f:
                        f.writelines(self.pending)
                except OSError:
                    pass
                self.pending = []

    def close(self) -> None:
        """Give file descriptor 2 back and let the pump forward what is still in the pipe (a traceback)."""
        try:
            os.dup2(self.real, 2)
        except OSError:
            return
        self.thread.join(timeout=2)


_FILTER: _StderrFilter | None = None


def quiet_tensorflow(log_path: str | os.PathLike | None = None) -> None:
    """Keep TensorFlow's C++ start-up lines off the console (and out of notebooks): they go to ``log_path``
    (a run's ``train.log``) once one is given, held until then. Every other line of standard error passes
    unchanged. ``WBC_TF_VERBOSE=1`` turns the filter off."""
    global _FILTER
    if os.environ.get(TF_VERBOSE, "") not in ("", "0"):
        return
    if _FILTER is None:
        try:
            _FILTER = _StderrFilter()
        except OSError:  # no file descriptor 2 to filter (an embedded interpreter): leave it
            return
    if log_path is not None:
        _FILTER.set_log(Path(log_path))


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
    return f"CPU: {model} ({os.cpu_count()} cores)"


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
