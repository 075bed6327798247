"""TensorFlow set-up for a small CPU: import it configured, seed it, pick precision.

TensorFlow's oneDNN kernels are what make convolutions fast on x86 CPUs, but
TF 2.21 leaves them off on CPUs without AVX-512 (this project's 2-core machines
among them). Measured here: 60x80 training went from about 195 to about 620
images/s with ``TF_ENABLE_ONEDNN_OPTS=1`` (see ``benchmarks/``). We turn them on
unless the user set the variable.
"""
from __future__ import annotations

import os

_CONFIGURED = False


def import_tf(threads: int | None = None):
    """Import TensorFlow with this project's CPU settings; returns the module."""
    global _CONFIGURED
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if not _CONFIGURED:
        tf.get_logger().setLevel("ERROR")  # retracing notices etc.; errors still show
        n = threads or int(os.environ.get("WBC_THREADS", 0)) or (os.cpu_count() or 1)
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, n))
        except RuntimeError:  # already initialised by the caller: keep theirs
            pass
        _CONFIGURED = True
    return tf


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bfloat16 arithmetic (AVX512_BF16 or AMX)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def set_precision(precision: str) -> str:
    """Set the Keras dtype policy: 'float32', 'mixed_bfloat16', or 'auto'.

    'auto' picks mixed_bfloat16 only where the CPU computes bfloat16 natively;
    without it, bfloat16 is emulated and was measured 10x slower here.
    Returns the policy actually set.
    """
    import keras

    if precision == "auto":
        precision = "mixed_bfloat16" if cpu_supports_bf16() else "float32"
    keras.mixed_precision.set_global_policy(precision)
    return precision


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and TensorFlow; make TF ops deterministic on CPU."""
    tf = import_tf()
    import keras

    keras.utils.set_random_seed(int(seed))
    if deterministic:
        tf.config.experimental.enable_op_determinism()
