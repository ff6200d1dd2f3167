"""Loading from a pack vs reading the original files (issue 13, array packs).

Two data sets, each loaded the way a run loads it, median of 3 (files in the page cache both
ways, so this is decoding cost, not the disk):

* PNG class folders: 2,000 synthetic 64×64 grey images in 2 classes (written to a temporary
  folder): :func:`calipers.data.load_images` on the folder vs :func:`calipers.tools.pack.load_pack`
  and reading every sample of the memory map (``np.array(X)``), and one batch of 64 random
  samples (what a loader worker does) from each.
* The hippocampus volumes (``$CALIPERS_DATA/hippocampus-msd``, 200 compressed NIfTI pairs; skipped
  when absent): :func:`calipers.segmentation.data.load_segmentation` vs the pack.

Run::

    .venv/bin/python bench/bench_pack.py            # writes bench/results/pack.json
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from calipers.data import load_images
from calipers.tools.pack import load_pack, load_segmentation_pack, pack

DATA = Path(os.environ.get("CALIPERS_DATA",
                          Path(__file__).resolve().parents[2] / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"


def _median(fn, n=3) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    from PIL import Image

    out = {}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "png"
        for c in ("a", "b"):
            (src / c).mkdir(parents=True)
            for i in range(1000):
                Image.fromarray((rng.random((64, 64)) * 255).astype(np.uint8)).save(
                    src / c / f"{i:04d}.png")
        t = time.perf_counter()
        pack(src, Path(tmp) / "png.pack")
        pack_s = time.perf_counter() - t
        files = _median(lambda: load_images(src))
        packed = _median(lambda: np.array(load_pack(Path(tmp) / "png.pack").X))  # a copy: read
        idx = np.sort(rng.choice(2000, 64, replace=False))
        allf = sorted(src.rglob("*.png"))
        batch_files = _median(lambda: [np.asarray(Image.open(allf[i])) for i in idx], 5)
        X = load_pack(Path(tmp) / "png.pack").X
        batch_pack = _median(lambda: np.array(X[idx]), 5)
        out["png_2000x64x64"] = {"files_s": files, "pack_s": packed, "speedup": files / packed,
                                 "batch64_files_s": batch_files, "batch64_pack_s": batch_pack,
                                 "batch_speedup": batch_files / batch_pack, "packing_s": pack_s}
        print(f"PNG 2,000 × 64×64: files {files:.3f} s, pack {packed:.4f} s "
              f"({files / packed:.0f}×); a batch of 64: {batch_files * 1e3:.2f} ms vs "
              f"{batch_pack * 1e3:.3f} ms ({batch_files / batch_pack:.0f}×); "
              f"packing {pack_s:.1f} s")
        hip = DATA / "hippocampus-msd"
        if hip.is_dir():
            from calipers.segmentation.data import load_segmentation

            t = time.perf_counter()
            pack(hip, Path(tmp) / "hip.pack")
            pack_s = time.perf_counter() - t
            files = _median(lambda: load_segmentation(hip, kind="nifti", multiple=8))
            packed = _median(lambda: load_segmentation_pack(Path(tmp) / "hip.pack", multiple=8))
            out["hippocampus"] = {"files_s": files, "pack_s": packed, "speedup": files / packed,
                                  "packing_s": pack_s}
            print(f"hippocampus: files {files:.3f} s, pack {packed:.3f} s "
                  f"({files / packed:.1f}×); packing {pack_s:.1f} s")
        else:
            print(f"hippocampus skipped: {hip} not found")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pack.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
