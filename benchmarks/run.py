"""Side-by-side benchmarks: the original code's approach against this package's, in one run.

Each measurement runs in a fresh child process (TensorFlow's settings are fixed at import).
Prints ratios and writes benchmarks/results/bench.json.

    python benchmarks/run.py [--size 240x320] [--steps 8] [--warmup 3]

Measured:
  train_*    training throughput (images/s, steady state after warm-up) of the paper model, batch 32:
             "original": float16 NumPy array -> float32 model, model.fit on arrays, TensorFlow's defaults
             (oneDNN off on CPUs without AVX-512); "ours": uint8 data cast inside the model, oneDNN on.
  decode_*   time to get TEST at the size: cold (decode every JPEG) and warm (the on-disk cache).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD_TRAIN = r"""
import json, os, sys, time
import numpy as np
mode, h, w, steps, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if mode == "original":
    import tensorflow as tf, keras
    from keras import layers
    m = keras.Sequential([keras.Input((h, w, 3))])
    for a, b in ((4, 8), (16, 16), (32, 32), (64, 64)):
        m.add(layers.Conv2D(a, 3, padding="same", activation="relu"))
        m.add(layers.Conv2D(b, 3, padding="same", activation="relu"))
        m.add(layers.MaxPooling2D())
    m.add(layers.Flatten()); m.add(layers.Dense(4))
    m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    n = 32 * (steps + warmup)
    x = np.random.default_rng(0).integers(0, 255, (n, h, w, 3)).astype(np.float16)
    y = np.random.default_rng(1).integers(0, 4, n)
    m.fit(x[: 32 * warmup], y[: 32 * warmup], batch_size=32, epochs=1, verbose=0)
    t = time.perf_counter(); m.fit(x[32 * warmup:], y[32 * warmup:], batch_size=32, epochs=1, verbose=0)
else:
    from wbc_utils.tfenv import import_tf
    tf = import_tf()
    from wbc_utils.model import build_model
    from wbc_utils.params import RunParams
    from wbc_utils.training import compile_model
    m = compile_model(build_model((h, w)), RunParams(image_size=[h, w], learning_rate=1e-3))
    n = 32 * (steps + warmup)
    x = np.random.default_rng(0).integers(0, 255, (n, h, w, 3), dtype=np.uint8)
    y = np.random.default_rng(1).integers(0, 4, n).astype(np.int32)
    ds = lambda a, b: tf.data.Dataset.from_tensor_slices((a, b)).batch(32).prefetch(2)
    m.fit(ds(x[: 32 * warmup], y[: 32 * warmup]), epochs=1, verbose=0)
    t = time.perf_counter(); m.fit(ds(x[32 * warmup:], y[32 * warmup:]), epochs=1, verbose=0)
dt = time.perf_counter() - t
print(json.dumps({"images_per_second": 32 * steps / dt}))
"""

CHILD_DECODE = r"""
import json, sys, time
from wbc_utils.data import build_manifest, load_split
h, w, cache = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
m = build_manifest()
t = time.perf_counter(); s = load_split(m, "TEST", (h, w), cache_dir=cache, progress=False); cold = time.perf_counter() - t
t = time.perf_counter(); s = load_split(build_manifest(), "TEST", (h, w), cache_dir=cache, progress=False); _ = s.images.sum(); warm = time.perf_counter() - t
print(json.dumps({"cold_seconds": cold, "warm_seconds": warm, "images": len(s)}))
"""


def child(code: str, *args, env=None) -> dict:
    res = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    if res.returncode:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="240x320")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--skip-decode", action="store_true")
    a = ap.parse_args()
    h, w = (int(v) for v in a.size.split("x"))
    out = {"size": [h, w], "batch": 32, "steps": a.steps, "machine": platform.platform(), "cpus": os.cpu_count()}
    base_env = {"TF_CPP_MIN_LOG_LEVEL": "2"}
    orig_env = {**base_env, "TF_ENABLE_ONEDNN_OPTS": os.environ.get("BENCH_BASELINE_ONEDNN", "0")}
    out["train_original"] = child(CHILD_TRAIN, "original", h, w, a.steps, a.warmup, env=orig_env)
    out["train_ours"] = child(CHILD_TRAIN, "ours", h, w, a.steps, a.warmup, env=base_env)
    out["train_ratio"] = out["train_ours"]["images_per_second"] / out["train_original"]["images_per_second"]
    print(f"training at {h}x{w}, batch 32: original {out['train_original']['images_per_second']:.1f} img/s, "
          f"ours {out['train_ours']['images_per_second']:.1f} img/s -> {out['train_ratio']:.2f}x")
    if not a.skip_decode:
        with tempfile.TemporaryDirectory() as cache:
            d = child(CHILD_DECODE, h, w, cache, env=base_env)
        out["decode_test"] = d
        out["decode_ratio_cold_over_warm"] = d["cold_seconds"] / d["warm_seconds"]
        print(f"TEST ({d['images']} images) at {h}x{w}: cold {d['cold_seconds']:.1f} s, warm {d['warm_seconds']:.2f} s "
              f"-> warm cache {out['decode_ratio_cold_over_warm']:.0f}x faster")
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "bench.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"written: {res / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
