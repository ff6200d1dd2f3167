"""From how busy the GPU was and where the training loop spent its time to one suggestion.

The rule of thumb: a GPU busy less than 95 % of the time is waiting for something. The loop's
own timers (:class:`calipers.gpu.monitor.LoopTimers`) say whether it waited for data or computed
in short kernels; the rules below turn that into one concrete change, most telling first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["BUSY", "Advice", "Trace", "advise"]

BUSY = 95.0  # per cent utilisation at which a GPU counts as busy
_DATA_BOUND = 0.30  # share of the epoch spent waiting for batches that makes the loop data-bound
_ROOMY = 0.50  # peak memory below this share of the card leaves room for larger batches
_SHORT_STEP_MS = 5.0  # steps this short are launch-bound: the network is small for the GPU


@dataclass(frozen=True)
class Trace:
    """What one run's GPU and training loop did (None where unknown).

    Attributes
    ----------
    util_mean : float
        Mean GPU utilisation over training, per cent (NVML: share of time a kernel ran).
    wait_fraction : float or None
        Share of the epochs' wall time the loop waited for the next batch.
    step_ms : float or None
        Mean compute time of one training step, milliseconds.
    data_on_device : bool or None
        Whether the training split lived on the device.
    workers : int or None
        Loader worker processes (0 with the data on the device).
    reads_files : bool or None
        Whether batches were decoded from image files as training went.
    amp : str or None
        ``"bf16"``, ``"fp16"`` or ``""`` (full precision).
    batch_size : int or None
    finder_batch_size : int or None
        The largest batch :mod:`calipers.gpu.finder` found to fit, when it ran.
    mem_peak_fraction : float or None
        Peak device memory in use over the card's total.
    """

    util_mean: float
    wait_fraction: float | None = None
    step_ms: float | None = None
    data_on_device: bool | None = None
    workers: int | None = None
    reads_files: bool | None = None
    amp: str | None = None
    batch_size: int | None = None
    finder_batch_size: int | None = None
    mem_peak_fraction: float | None = None


@dataclass(frozen=True)
class Advice:
    """One suggestion: a short ``code`` (``ok``, ``pack``, ``loader``, ``device``, ``batch``,
    ``amp``, ``small``, ``host``) and the sentence shown to the user."""

    code: str
    text: str

    def to_dict(self) -> dict:
        return asdict(self)


def advise(t: Trace) -> Advice:
    """The one change most likely to keep the GPU busier, from a run's :class:`Trace`.

    Examples
    --------
    >>> advise(Trace(util_mean=40, wait_fraction=0.6, data_on_device=False, workers=0)).code
    'loader'
    """
    u = f"The GPU was busy {t.util_mean:.0f} % of the time"
    if t.util_mean >= BUSY:
        return Advice("ok", f"{u}: it is working hard; nothing to change.")
    if t.wait_fraction is None:
        return Advice("host", f"{u}; the work between GPU calls (reading and writing files, "
                      "Python on the CPU) dominates: give the GPU larger pieces of work per call "
                      "(predict: a larger --roi, or none; permute: fewer --chunks).")
    w = f"{u}, and the loop waited for data {100 * t.wait_fraction:.0f} % of each epoch"
    if t.wait_fraction >= _DATA_BOUND:
        if t.reads_files:
            return Advice("pack", f"{w}: decoding image files is the bottleneck; pack the data "
                          "set into one array file (calipers pack SRC DST, then "
                          "data.kind = \"pack\").")
        if t.data_on_device is False and t.workers == 0:  # the segmentation recipe's loop
            return Advice("loader", f"{w}: the patches are cropped and augmented on the CPU, "
                          "one image after another, between steps; that sets the pace (the "
                          "recipe's loop has no loader workers). Less augmentation ([segmentation] "
                          "augment = false) or fewer, larger patches per step wait less.")
        if t.data_on_device is False and (t.workers or 0) < 8:
            return Advice("loader", f"{w}: use more loader workers with pinned memory "
                          f"(now {t.workers or 0} workers), or shrink the data so the split "
                          "fits on the device.")
        if t.data_on_device is False:
            return Advice("device", f"{w}: keep the training split on the device (it did not "
                          "fit the memory budget; use a GPU with more memory or smaller inputs).")
        return Advice("loader", f"{w}: batches are gathered slowly even on the device; use a "
                      "larger batch so each gather feeds more work.")
    c = f"{u}, computing most of the time in steps of {t.step_ms or 0:.1f} ms"
    fits_more = t.finder_batch_size is not None and t.batch_size is not None \
        and t.finder_batch_size > t.batch_size
    roomy = t.mem_peak_fraction is not None and t.mem_peak_fraction < _ROOMY
    if fits_more:
        return Advice("batch", f"{c}: use a larger batch; batch_size = {t.finder_batch_size} "
                      f"fits (now {t.batch_size}).")
    if roomy and t.finder_batch_size is None:
        return Advice("batch", f"{c}, with {100 * t.mem_peak_fraction:.0f} % of its memory in "
                      "use: use a larger batch (set train.batch_size = \"auto\" to find the "
                      "largest that fits).")
    if not t.amp:
        return Advice("amp", f"{c} in full precision: set train.amp = \"auto\" (bf16 where "
                      "the GPU has it) for faster kernels.")
    if t.step_ms is not None and t.step_ms < _SHORT_STEP_MS:
        return Advice("small", f"{c}: this network is too small to occupy this GPU whatever the "
                      "batch size; train several at once (MLPs are stacked by calipers.batched) "
                      "or use the CPU.")
    return Advice("small", f"{c}: the kernels are too short to fill this GPU; a wider network "
                  "or several networks at once would use it better.")
