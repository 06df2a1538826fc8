"""Decoding the layouts into the cache: the original way (one process, per-pixel distances to the 10 palette
colours, the whole array in RAM, copied once more by the `keep` indexing) against `cache.prepare_cache`.

    .venv/bin/python bench/prepare_bench.py                       # 200 generated 512x512 layouts
    .venv/bin/python bench/prepare_bench.py --n 3000 --workers 1 2 4

Each variant runs in its own process, so each one's peak resident memory (VmHWM) is its own; the decoding workers'
peak is their largest (getrusage of the children). Images/s per core divides by the CPU time of the process and its
workers, so it holds on a busy shared machine; wall images/s does not. The new way's lookup-table build is a fixed
cost per prepare, printed apart. The projection to 27,897 images (the researchers' non-empty layouts) assumes 8
workers on 8 free cores at the measured per-core rate, and at the measured 1 -> 2 worker scaling.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FULL_N, FULL_WORKERS = 27_897, 8


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # no /proc: peak only


def _manifest(path: Path):
    """The generated manifest as prepare_cache reads it (without importing torch, as neither variant needs it)."""
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df = df[df["is_empty"] != "true"].reset_index(drop=True)
    return pd.DataFrame({"row": np.arange(2, len(df) + 2), "path": [str(path.parent / p) for p in df["layout_path"]],
                         "type": df["type"], "is_empty": False, "label": (df["type"] == "scene").astype(int)})


def _old_decode(path: str, size: int) -> np.ndarray:
    """The original data._decode."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("RGB", "RGBA", "P"):
            raise ValueError(f"mode {im.mode} is not RGB")
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.NEAREST)
        return np.asarray(im, dtype=np.uint8)


def old_prepare(manifest, size: int, out: Path) -> None:
    """The reference: the original prepare_cache's work (decode loop, arrays in RAM, `keep` copy, np.save)."""
    from imginav_lib.palette import rgb_to_mask

    n = len(manifest)
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=np.uint8)
    keep = []
    for i, path in enumerate(manifest["path"]):
        rgb = _old_decode(path, size)
        images[i] = rgb.transpose(2, 0, 1)
        masks[i] = rgb_to_mask(rgb)  # distances of every pixel to the 10 palette colours
        keep.append(i)
    keep_idx = np.array(keep)
    np.save(out / "images.npy", images[keep_idx])
    np.save(out / "masks.npy", masks[keep_idx])
    np.save(out / "labels.npy", manifest["label"].to_numpy(np.int64)[keep_idx])


def child(variant: str, manifest_csv: Path, size: int, workers: int, out: Path) -> None:
    manifest = _manifest(manifest_csv)
    base_kb = _rss_kb("VmRSS")
    setup = 0.0
    if variant == "new":
        from imginav_lib.data import cache
        from imginav_lib.palette import mask_lut

        t = time.perf_counter()
        mask_lut(30.0)
        setup = time.perf_counter() - t
    t, c = time.perf_counter(), time.process_time()
    if variant == "old":
        old_prepare(manifest, size, out)
    else:
        cache.MIN_PIXELS_PER_WORKER = 1  # exactly the workers asked for
        cache.prepare_cache(manifest, size, out, workers=workers, progress=False)
    wall = time.perf_counter() - t
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - c + kids.ru_utime + kids.ru_stime
    print(json.dumps({"n": len(manifest), "wall": wall, "cpu": cpu, "setup": setup, "base_kb": base_kb,
                      "peak_kb": _rss_kb("VmHWM"), "worker_peak_kb": kids.ru_maxrss}))


def run(variant: str, manifest: Path, size: int, workers: int, tmp: Path) -> dict:
    out = Path(tempfile.mkdtemp(dir=tmp, prefix=f"{variant}{workers}-"))
    cmd = [sys.executable, __file__, "--child", variant, "--manifest", str(manifest), "--size", str(size),
           "--workers", str(workers), "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    subprocess.run(["rm", "-rf", str(out)], check=True)  # keep /tmp small between variants
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="generated layouts (empty ones are left out, as in training)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts of the new way")
    ap.add_argument("--manifest", type=Path, default=None, help="use these layouts instead of generating them")
    ap.add_argument("--child", choices=["old", "new"], help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.child, a.manifest, a.size, a.workers[0], a.out)

    tmp = Path(tempfile.mkdtemp(prefix="imginav-prepare-bench-"))
    manifest = a.manifest
    if manifest is None:
        from imginav_lib.demo.layouts import make_layouts

        manifest = make_layouts(tmp / "layouts", n=a.n, size=a.size, seed=0)
    variants = [("old", 1)] + [("new", w) for w in a.workers]
    r = {(v, w): run(v, manifest, a.size, w, tmp) for v, w in variants}
    n = r[("old", 1)]["n"]
    print(f"{n} non-empty {a.size}x{a.size} layouts; each variant in its own process")
    print(f"{'variant':<16} {'img/s':>7} {'img/s/core':>11} {'peak RSS MB':>12} {'worker peak MB':>15} {'setup s':>8}")
    for (v, w), x in r.items():
        name = "old (reference)" if v == "old" else f"new, {w} worker{'s' * (w > 1)}"
        worker = f"{x['worker_peak_kb'] / 1024:.0f}" if v == "new" and w > 1 else "-"
        print(f"{name:<16} {n / x['wall']:>7.1f} {n / x['cpu']:>11.1f} {x['peak_kb'] / 1024:>12.0f} {worker:>15} {x['setup']:>8.2f}")

    old, new1 = r[("old", 1)], r[("new", 1)]
    per_core_old, per_core_new = n / old["cpu"], n / new1["cpu"]
    print(f"per core, new / old: {per_core_new / per_core_old:.1f}x")
    scaling = None
    if ("new", 2) in r:
        scaling = (n / r[("new", 2)]["wall"]) / (2 * n / new1["wall"])
        print(f"1 -> 2 workers: {2 * scaling:.2f}x the images/s ({scaling:.0%} of linear) on this machine")
    old_gb = (old["base_kb"] + (old["peak_kb"] - old["base_kb"]) * FULL_N / n) / 1024**2
    print(f"projected for {FULL_N} images: old {FULL_N / per_core_old / 60:.0f} min in one process, "
          f"~{old_gb:.0f} GB RSS (grows with N)")
    at8 = new1["setup"] + FULL_N / (FULL_WORKERS * per_core_new)
    line = f"projected for {FULL_N} images: new {at8 / 60:.1f} min with {FULL_WORKERS} workers on free cores"
    if scaling:
        line += f" ({(new1['setup'] + FULL_N / (FULL_WORKERS * per_core_new * min(scaling, 1.0))) / 60:.1f} min at the measured scaling)"
    print(line + f"; peak RSS flat in N (parent {max(x['peak_kb'] for (v, _), x in r.items() if v == 'new') / 1024:.0f} MB here)")
    subprocess.run(["rm", "-rf", str(tmp)], check=True)


if __name__ == "__main__":
    main()
