"""Side-by-side benchmarks: the original code's approach against this package's, in one run.

Each measurement runs in a fresh child process (TensorFlow's settings are fixed at import).
Prints ratios and writes benchmarks/results/bench.json.

    python benchmarks/run.py [--size 240x320] [--steps 8] [--warmup 3] [--skip-memory] [--quick]

Measured:
  train_*    training throughput (images/s, steady state after warm-up) of the paper model, batch 32:
             "original": float16 NumPy array -> float32 model, model.fit on arrays, TensorFlow's defaults
             (oneDNN off on CPUs without AVX-512); "ours": uint8 data cast inside the model, oneDNN on.
  train_ours_bf16  the same with the mixed_bfloat16 policy (emulated, slow, where the CPU lacks AVX512_BF16).
  decode_*   time to get TEST at the size: cold (decode every JPEG) and warm (the on-disk cache).
  warm_all   all 12,444 images at the size from a warm cache: ready to train (opened), and every pixel read.
  memory_*   peak resident memory (getrusage of the child) of one full-TRAIN epoch at the size with TEST as
             validation: "original" holds TRAIN and TEST as float16 arrays and calls model.fit on them;
             "ours" is train_run (uint8 cache read on demand, tf.data), epoch, validation, predictions.
  bf16_study (--bf16-study) the 2020 recipe, float32 against mixed_bfloat16 on the same seeds: TEST accuracy and
             runs held at ln 4 (the collapse profile's size: 60x80, 2,000 images, 3 epochs, seeds 0-2, learning
             rates 0.001 and 0.0003; about 20 minutes, as bfloat16 is emulated here).
  quick_*    (--quick) the wall time of `python -m wbc_utils all --profile quick --no-pdf` from an empty runs
             folder (the decode cache kept).
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

#: The 2020 code's model as it built it: Sequential, float32, compiled with its loss and metric.
ORIGINAL_MODEL = r"""
def original_model(h, w):
    import keras
    from keras import layers
    m = keras.Sequential([keras.Input((h, w, 3))])
    for a, b in ((4, 8), (16, 16), (32, 32), (64, 64)):
        m.add(layers.Conv2D(a, 3, padding="same", activation="relu"))
        m.add(layers.Conv2D(b, 3, padding="same", activation="relu"))
        m.add(layers.MaxPooling2D())
    m.add(layers.Flatten()); m.add(layers.Dense(4))
    m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return m
"""

CHILD_TRAIN = ORIGINAL_MODEL + r"""
import json, os, sys, time
import numpy as np
mode, h, w, steps, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if mode == "original":
    m = original_model(h, w)
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
    from wbc_utils.tfenv import set_precision
    set_precision(os.environ.get("BENCH_PRECISION", "float32"))
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

CHILD_MEMORY = ORIGINAL_MODEL + r"""
import json, os, resource, sys, time
import numpy as np
mode, h, w, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
from wbc_utils.data import build_manifest, load_split
t = time.perf_counter()
if mode == "original":
    m = build_manifest()
    # the 2020 code: every image in one float16 array (decoded here from the uint8 cache: same footprint)
    x = np.asarray(load_split(m, "TRAIN", (h, w), progress=False).images).astype(np.float16)
    test = load_split(m, "TEST", (h, w), progress=False)
    xv = np.asarray(test.images).astype(np.float16)
    y = load_split(m, "TRAIN", (h, w), progress=False).labels
    model = original_model(h, w)
    kw = {"steps_per_epoch": steps} if steps else {}
    model.fit(x, y, batch_size=32, epochs=1, validation_data=(xv, test.labels), verbose=0, **kw)
else:
    import tempfile
    from wbc_utils.params import RunParams
    from wbc_utils.training import train_run
    p = RunParams(image_size=[h, w], epochs=1, train_subset=0, learning_rate=3e-4, profile="bench")
    with tempfile.TemporaryDirectory() as d:
        train_run(p, d, verbose=0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak_rss_mb": peak, "seconds": time.perf_counter() - t, "steps_per_epoch": steps or "all"}))
"""

CHILD_WARM_ALL = r"""
import json, sys, time
import numpy as np
from wbc_utils.data import build_manifest, load_split
h, w = int(sys.argv[1]), int(sys.argv[2])
m = build_manifest()
names = [s for s in ("TRAIN", "TEST", "TEST_SIMPLE") if (m.frame["split"] == s).any()]
for s in names:  # make sure the cache exists (cold decode not timed here)
    load_split(m, s, (h, w), progress=False)
t = time.perf_counter()
m = build_manifest()
splits = [load_split(m, s, (h, w), progress=False) for s in names]
ready = time.perf_counter() - t
total = sum(int(np.asarray(s.images).sum(dtype=np.uint64) >= 0) * len(s) for s in splits)
read_all = time.perf_counter() - t
print(json.dumps({"images": total, "ready_seconds": ready, "read_all_seconds": read_all}))
"""

CHILD_BF16 = r"""
import json, math, sys, tempfile
h, w, n, epochs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
seeds = [int(v) for v in sys.argv[5].split(",")]
from wbc_utils.params import RunParams
from wbc_utils.training import train_run
rows = []
for lr in (1e-3, 3e-4):
    for seed in seeds:
        for precision in ("float32", "mixed_bfloat16"):
            p = RunParams(image_size=[h, w], epochs=epochs, train_subset=n, seed=seed, learning_rate=lr,
                          precision=precision, profile="bench")
            with tempfile.TemporaryDirectory() as d:
                m = train_run(p, d, verbose=0)
            rows.append({"learning_rate": lr, "seed": seed, "precision": m["precision_policy"],
                         "test_accuracy": m["test_accuracy"], "held_at_ln4": m["collapsed"],
                         "final_train_loss": m["final_train_loss"], "images_per_second": m["images_per_second"]})
print(json.dumps({"runs": rows}))
"""

CHILD_DECODE = r"""
import json, sys, time
import numpy as np
from wbc_utils.data import build_manifest, load_split
h, w, cache = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
m = build_manifest()
t = time.perf_counter()
s = load_split(m, "TEST", (h, w), cache_dir=cache, progress=False)
cold = time.perf_counter() - t
t = time.perf_counter()
s = load_split(build_manifest(), "TEST", (h, w), cache_dir=cache, progress=False)
_ = np.asarray(s.images).sum()
warm = time.perf_counter() - t
print(json.dumps({"cold_seconds": cold, "warm_seconds": warm, "images": len(s)}))
"""


def child(code: str, *args, env=None) -> dict:
    res = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    if res.returncode:
        raise RuntimeError(f"benchmark child exited with status {res.returncode}: {res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def child_memory(code: str, *args, env=None) -> dict:
    """Run a child under GNU time: its peak resident memory is known even when the kernel kills it."""
    import re

    timer = "/usr/bin/time"
    if not os.path.exists(timer):
        return child(code, *args, env=env)
    res = subprocess.run([timer, "-v", sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, **(env or {})})
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr)
    out = {"returncode": res.returncode, "peak_rss_mb": int(peak.group(1)) / 1024 if peak else None}
    if res.returncode == 0:
        out.update({k: v for k, v in json.loads(res.stdout.strip().splitlines()[-1]).items() if k != "peak_rss_mb"})
    else:
        out["error"] = ("killed by signal 9 (the kernel's out-of-memory killer, most likely)"
                        if "signal 9" in res.stderr else res.stderr[-500:])
    return out


def parallel_runs() -> dict:
    """Wall time of two short training runs (60x80, a 3,000-image subset, 6 epochs): one after the other with
    every core, then both at once with one thread each (what ``jobs=2`` does), in fresh processes, on the same
    seeds."""
    import time

    def train(loss: str, seed: int, d: str, threads: str | None):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "WBC_RUNS_DIR": d}
        if threads:
            env["WBC_THREADS"] = threads
        return subprocess.Popen([sys.executable, "-m", "wbc_utils", "train", "--loss", loss, "--target-encoding",
                                 "onehot", "--seed", str(seed), "--epochs", "6", "--image-size", "60x80",
                                 "--train-subset", "3000", "--learning-rate", "0.0003", "--force"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait(procs):
        for p in procs:
            _, err = p.communicate()
            if p.returncode:
                raise RuntimeError(f"benchmark run failed: {err[-2000:]}")

    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        for loss in ("mse", "huber"):
            wait([train(loss, 0, d, None)])
        seq = time.perf_counter() - t
        t = time.perf_counter()
        wait([train(loss, 0, d, "1") for loss in ("mse", "huber")])
        par = time.perf_counter() - t
    return {"sequential_seconds": seq, "parallel_seconds": par, "ratio": seq / par}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="240x320")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--skip-memory", action="store_true", help="skip the two full-epoch memory runs (minutes)")
    ap.add_argument("--skip-bf16", action="store_true")
    ap.add_argument("--skip-train", action="store_true", help="skip the throughput measurements")
    ap.add_argument("--memory-steps", type=int, default=0,
                    help="limit the original's memory run to this many steps (0: the whole epoch)")
    ap.add_argument("--quick", action="store_true", help="also time the quick profile end to end (~30 min)")
    ap.add_argument("--parallel-runs", action="store_true",
                    help="time two short runs (60x80, 3,000 images) one after the other (all cores each) against "
                         "both at once (one thread each): what the study's --jobs 2 is worth on this machine")
    ap.add_argument("--bf16-study", action="store_true",
                    help="train the 2020 recipe (cross-entropy, integer labels) in float32 and mixed_bfloat16 on the "
                         "same seeds at 48x64 and compare accuracy and how often it is held at ln 4")
    a = ap.parse_args()
    h, w = (int(v) for v in a.size.split("x"))
    out = {"size": [h, w], "batch": 32, "steps": a.steps, "machine": platform.platform(), "cpus": os.cpu_count()}
    base_env = {"TF_CPP_MIN_LOG_LEVEL": "2"}
    orig_env = {**base_env, "TF_ENABLE_ONEDNN_OPTS": os.environ.get("BENCH_BASELINE_ONEDNN", "0")}
    if not a.skip_train:
        out["train_original"] = child(CHILD_TRAIN, "original", h, w, a.steps, a.warmup, env=orig_env)
        out["train_ours"] = child(CHILD_TRAIN, "ours", h, w, a.steps, a.warmup, env=base_env)
        out["train_ratio"] = out["train_ours"]["images_per_second"] / out["train_original"]["images_per_second"]
        print(f"training at {h}x{w}, batch 32: original {out['train_original']['images_per_second']:.1f} img/s, "
              f"ours {out['train_ours']['images_per_second']:.1f} img/s -> {out['train_ratio']:.2f}x")
    if not a.skip_bf16 and not a.skip_train:
        from wbc_utils.tfenv import cpu_supports_bf16

        out["cpu_has_native_bf16"] = cpu_supports_bf16()
        out["train_ours_bf16"] = child(CHILD_TRAIN, "ours", h, w, max(2, a.steps // 4), 1,
                                       env={**base_env, "BENCH_PRECISION": "mixed_bfloat16"})
        out["bf16_ratio"] = out["train_ours_bf16"]["images_per_second"] / out["train_ours"]["images_per_second"]
        print(f"mixed_bfloat16 (native bf16 on this CPU: {out['cpu_has_native_bf16']}): "
              f"{out['train_ours_bf16']['images_per_second']:.1f} img/s -> {out['bf16_ratio']:.2f}x float32")
    if not a.skip_decode:
        with tempfile.TemporaryDirectory() as cache:
            d = child(CHILD_DECODE, h, w, cache, env=base_env)
        out["decode_test"] = d
        out["decode_ratio_cold_over_warm"] = d["cold_seconds"] / d["warm_seconds"]
        print(f"TEST ({d['images']} images) at {h}x{w}: cold {d['cold_seconds']:.1f} s, warm {d['warm_seconds']:.2f} s "
              f"-> warm cache {out['decode_ratio_cold_over_warm']:.0f}x faster")
        w_all = child(CHILD_WARM_ALL, h, w, env=base_env)
        out["warm_all"] = w_all
        print(f"all {w_all['images']} images at {h}x{w} from a warm cache: ready in {w_all['ready_seconds']:.2f} s, "
              f"every pixel read in {w_all['read_all_seconds']:.2f} s")
    if not a.skip_memory:
        out["memory_original"] = child_memory(CHILD_MEMORY, "original", h, w, a.memory_steps, env=orig_env)
        out["memory_ours"] = child_memory(CHILD_MEMORY, "ours", h, w, 0, env=base_env)
        out["memory_ratio_original_over_ours"] = (out["memory_original"]["peak_rss_mb"] /
                                                  out["memory_ours"]["peak_rss_mb"])
        print(f"peak memory, one full-TRAIN epoch at {h}x{w}: original {out['memory_original']['peak_rss_mb']:.0f} MB"
              f"{' (' + out['memory_original']['error'] + ')' if out['memory_original'].get('error') else ''}, "
              f"ours {out['memory_ours']['peak_rss_mb']:.0f} MB -> {out['memory_ratio_original_over_ours']:.1f}x less")
    if a.bf16_study:
        r = child(CHILD_BF16, 60, 80, 2000, 3, "0,1,2", env=base_env)["runs"]  # the collapse profile's size
        out["bf16_study"] = r
        for lr in (1e-3, 3e-4):
            for prec in ("float32", "mixed_bfloat16"):
                sel = [x for x in r if x["learning_rate"] == lr and x["precision"] == prec]
                acc = sum(x["test_accuracy"] for x in sel) / len(sel)
                held = sum(x["held_at_ln4"] for x in sel)
                print(f"2020 recipe at 60x80, lr {lr:g}, {prec}: mean TEST accuracy {acc:.1%}, "
                      f"{held}/{len(sel)} collapsed")
    if a.parallel_runs:
        out["parallel_runs"] = parallel_runs()
        pr = out["parallel_runs"]
        print(f"two short runs: one after the other {pr['sequential_seconds']:.1f} s, both at once "
              f"(1 thread each) {pr['parallel_seconds']:.1f} s -> {pr['ratio']:.2f}x throughput")
    if a.quick:
        import time

        with tempfile.TemporaryDirectory() as d:
            env = {**os.environ, "WBC_RUNS_DIR": f"{d}/runs", "WBC_OUTPUT_DIR": d}
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "wbc_utils", "all", "--profile", "quick", "--no-pdf"], cwd=ROOT,
                               env=env, capture_output=True, text=True)
            out["quick_end_to_end"] = {"seconds": time.perf_counter() - t, "returncode": r.returncode}
        from wbc_utils.params import get_profile

        n_runs = len(get_profile("quick").runs())
        print(f"quick profile end to end ({n_runs} runs + figures + HTML): "
              f"{out['quick_end_to_end']['seconds'] / 60:.1f} min (exit {r.returncode})")
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    import datetime

    from wbc_utils.artifacts import write_json

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out["finished"] = stamp
    kept = write_json(res / f"bench_{h}x{w}_{stamp}.json", out)  # every run kept
    write_json(res / "bench.json", out)  # and the latest, where the README points
    print(f"written: {kept} (and {res / 'bench.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
