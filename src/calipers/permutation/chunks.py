"""Permutations in chunks: tasks that any executor runs, combined into one run's null.

Chunk ``c`` of a run computes, for every contrast, the relabellings in a contiguous range whose
boundaries are multiples of the engine's own GEMM chunk (NOTE [Chunked nulls] in ``engine.py``).
Relabellings are drawn in fixed seeded blocks (:meth:`Relabellings.rows`), so a chunk draws
exactly the relabellings one run draws for that range; its max-null scores, exceedance counts
and TFCE/cluster maxima go to ``chunk-CCC.npz`` (atomically: the file is the task's marker),
and :func:`run_chunked` concatenates and sums them into p-maps equal to one run's, bit for bit
on the CPU with one thread per worker.
"""

from __future__ import annotations

import hashlib
import itertools
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from calipers._device import resolve_device
from calipers.permutation.design import Relabellings
from calipers.permutation.engine import (
    ContrastNull,
    PreparedContrast,
    RangeNull,
    _Extras,
    combine_ranges,
    engine_chunk,
    run_contrast_range,
)
from calipers.runs import save_npz

__all__ = ["chunk_ranges", "permutation_chunk", "run_chunked"]

_FIELDS = ("max_score", "counts", "tfce_max", "tfce_counts", "extent_max", "mass_max")


def chunk_ranges(n_perm: int, engine: int, n_chunks: int) -> list[tuple[int, int]]:
    """``n_chunks`` ranges covering ``0 .. n_perm-1``, boundaries at multiples of ``engine``
    (some ranges are empty when there are fewer engine chunks than ``n_chunks``)."""
    m = -(-n_perm // engine)
    cuts = [min(n_perm, engine * round(c * m / n_chunks)) for c in range(n_chunks + 1)]
    return list(itertools.pairwise(cuts))


def permutation_chunk(preps: Sequence[PreparedContrast], relabellings: Sequence[Relabellings],
                      ranges: Sequence[tuple[int, int]], out: str, *, device: Any = "auto",
                      two_sided: bool = False, chunk_size: int | None = None,
                      extras: _Extras | None = None) -> None:
    """The task of one chunk: contrast ``i``'s relabellings ``ranges[i]``, saved to ``out``."""
    from calipers._device import resolve_device

    dev = resolve_device(device)
    arrays: dict[str, np.ndarray] = {}
    for i, (prep, rel, (a, b)) in enumerate(zip(preps, relabellings, ranges, strict=True)):
        part = run_contrast_range(prep, rel, a, b, device=dev, two_sided=two_sided,
                                  chunk_size=chunk_size, extras=extras)
        arrays[f"c{i}_range"] = np.array([a, b, part.work_bytes], dtype=np.int64)
        arrays[f"c{i}_identity"] = np.array(part.identity, dtype=np.int64)
        for name in _FIELDS:
            value = getattr(part, name)
            if value is not None:
                arrays[f"c{i}_{name}"] = value
    save_npz(out, arrays)


def _load_chunk(path: Path, i: int) -> RangeNull:
    with np.load(path, allow_pickle=False) as z:
        a, b, work = (int(v) for v in z[f"c{i}_range"])
        kw = {name: z[f"c{i}_{name}"] for name in _FIELDS if f"c{i}_{name}" in z.files}
        ident = tuple(int(v) for v in z[f"c{i}_identity"])
    return RangeNull(a, b, identity=ident, work_bytes=work, **kw)


def _digest(preps, relabellings, extras, two_sided, chunk_size, n_chunks) -> str:
    """Names the chunk folder after everything the chunks depend on: a rerun with other data or
    options never reads stale chunks."""
    h = hashlib.sha256()
    for p in preps:
        for arr in (p.basis, p.y_hat, p.score):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(f"{p.kind}{p.flip}{p.k}{p.df}".encode())
    for r in relabellings:
        h.update(f"{r.flip}{r.n}{r.exhaustive}{r.seed}".encode())
        if r.blocks is not None:
            h.update(np.ascontiguousarray(r.blocks).tobytes())
    mask = None if extras.mask is None else np.packbits(extras.mask).tobytes()
    h.update(repr((extras.tfce, extras.tfce_H, extras.tfce_E, extras.connectivity,
                   extras.extent_threshold, extras.mass_threshold, two_sided, chunk_size,
                   n_chunks)).encode())
    h.update(mask or b"")
    return h.hexdigest()[:12]


def run_chunked(
    preps: Sequence[PreparedContrast],
    relabellings: Sequence[Relabellings],
    *,
    executor: Any = None,
    n_chunks: int = 1,
    work_dir: str | Path | None = None,
    device: Any = "auto",
    two_sided: bool = False,
    chunk_size: int | None = None,
    extras: _Extras | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[ContrastNull]:
    """Every contrast's null, computed as ``n_chunks`` tasks through ``executor``.

    Chunk files go to ``work_dir/chunks-<digest>/`` (a temporary folder when None); finished
    chunks of an interrupted run are not recomputed. Returns what :func:`run_contrast` returns
    for each contrast, identical to one run (NOTE [Chunked nulls]).
    """
    from calipers.tasks import SerialExecutor, Task

    extras = extras or _Extras()
    executor = executor or SerialExecutor()
    dev = resolve_device(device)
    per_contrast = [
        chunk_ranges(r.n, engine_chunk(p, r.n, chunk_size=chunk_size, extras=extras, device=dev),
                     n_chunks)
        for p, r in zip(preps, relabellings, strict=True)
    ]
    total = sum(r.n for r in relabellings)
    with ExitStack() as stack:
        if work_dir is None:
            work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="calipers-perm-"))
        folder = Path(work_dir) / ("chunks-" + _digest(preps, relabellings, extras, two_sided,
                                                         chunk_size, n_chunks))
        folder.mkdir(parents=True, exist_ok=True)
        dev = device if isinstance(device, str) else str(device)
        tasks = []
        for c in range(n_chunks):
            ranges = [rs[c] for rs in per_contrast]
            out = folder / f"chunk-{c:03d}.npz"
            tasks.append(Task(f"perm/chunk-{c:03d}", permutation_chunk,
                              {"preps": list(preps), "relabellings": list(relabellings),
                               "ranges": ranges, "out": str(out), "device": dev,
                               "two_sided": two_sided, "chunk_size": chunk_size,
                               "extras": extras}, out))
        done = [sum(b - a for a, b in (rs[c] for rs in per_contrast))
                for c in range(n_chunks) if tasks[c].done()]
        n_done = [sum(done)]

        def _on_done(task: Task, _result: Any) -> None:
            c = tasks.index(task)
            n_done[0] += sum(b - a for a, b in (rs[c] for rs in per_contrast))
            if progress is not None:
                progress(n_done[0], total)

        executor.map([t for t in tasks if not t.done()], on_done=_on_done)
        return [combine_ranges(p, r.n, [_load_chunk(t.marker, i) for t in tasks],
                               two_sided=two_sided, extras=extras)
                for i, (p, r) in enumerate(zip(preps, relabellings, strict=True))]
