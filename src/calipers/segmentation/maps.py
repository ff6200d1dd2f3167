"""Per-voxel MC-dropout uncertainty maps of a segmentation network, memory-bounded.

# NOTE [Voxel maps reduced on the fly]
A 3-D volume never holds all T pass outputs: the passes run in chunks of ``chunk_size`` and each
chunk's probabilities p_t (k, C, *S) are folded into running statistics and dropped. Per voxel we
keep the streaming moments of p_t (shift, deviation sum and M2: 3C maps) and of H[p_t] (shift and
sum: 2 maps), float32, whatever T is — ``calipers.uncertainty.StreamingMoments`` (NOTE [Streaming
moments] in ``uncertainty/streaming.py``), the one mean/variance accumulator of every MC path.
When all passes are equal (dropout p = 0) it adds exactly zero, so the std and the mutual
information are exactly 0.

Maps (nats for entropies):
  segmentation  argmax_c p̄
  entropy       H[p̄] (total predictive uncertainty)
  mutual_info   H[p̄] − mean_t H[p_t] (BALD, epistemic)
  std           std over passes (ddof = 0) of the winning class's probability
  disagreement  for an ensemble of M models: H[mean_m p̄_m] − mean_m H[p̄_m], the mutual
                information between the prediction and the choice of model.

Randomness: pass chunk ``c`` of model ``m`` runs in ``seeded_torch(child_seed(seed, m, c))``
(NOTE [Task seeds] in ``_seeds.py``), so maps depend on (seed, n_mc, chunk_size) only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from calipers._checks import _check_positive_int
from calipers._seeds import child_seed, seeded_torch
from calipers.segmentation.data import crop_to, pad_multiple, pad_to
from calipers.uncertainty.mc import _model_on_device, mc_dropout_mode
from calipers.uncertainty.measures import torch_entropy, torch_mutual_info
from calipers.uncertainty.streaming import StreamingMoments

__all__ = ["VoxelMaps", "mc_segment"]


@dataclass(frozen=True, eq=False)
class VoxelMaps:
    """MC-dropout maps of one image, on its original grid (NumPy, CPU).

    Attributes
    ----------
    proba : ndarray of shape (C, *S), float32
        Predictive mean probability of each class.
    segmentation : ndarray of shape (*S), uint8
        ``argmax_c proba`` (class indices, 0 = background).
    entropy, mutual_info, std : ndarray of shape (*S), float32
        See NOTE [Voxel maps reduced on the fly]; >= 0, entropies in nats.
    disagreement : ndarray of shape (*S), float32, or None
        Between-model mutual information of an ensemble; None for one model.
    n_mc : int
        Passes per model (0: one deterministic pass).
    n_models : int
    """

    proba: np.ndarray = field(repr=False)
    segmentation: np.ndarray = field(repr=False)
    entropy: np.ndarray = field(repr=False)
    mutual_info: np.ndarray = field(repr=False)
    std: np.ndarray = field(repr=False)
    disagreement: np.ndarray | None = field(repr=False)
    n_mc: int
    n_models: int

    def summary(self) -> dict[str, float]:
        """Mean of each map inside the predicted foreground (segmentation > 0); NaN if empty."""
        fg = self.segmentation > 0
        out = {"n_mc": self.n_mc, "n_models": self.n_models, "foreground_voxels": int(fg.sum())}
        maps = {"entropy": self.entropy, "mutual_info": self.mutual_info, "std": self.std,
                "disagreement": self.disagreement}
        for name, m in maps.items():
            if m is not None:
                out[f"mean_{name}_fg"] = float(m[fg].mean()) if fg.any() else float("nan")
        return out


def _entropy(p: torch.Tensor) -> torch.Tensor:  # over the class axis 0
    return torch_entropy(p, dim=0)


class _PassStats:
    """Streaming p̄, var and mean H[p_t] per voxel (NOTE [Voxel maps reduced on the fly])."""

    def __init__(self) -> None:
        self.p, self.h = StreamingMoments(), StreamingMoments(variance=False)

    def add(self, p: torch.Tensor) -> None:  # a chunk of passes, (k, C, *S)
        self.p.add(p)
        self.h.add(torch_entropy(p, dim=1))


def _mc_segment_iv(models, image, n_mc, chunk_size, multiple):
    models = [models] if isinstance(models, nn.Module) else list(models)
    if not models or not all(isinstance(m, nn.Module) for m in models):
        raise TypeError("models must be an nn.Module or a non-empty sequence of them; got "
                        f"{type(models).__name__}.")
    x = np.asarray(image, dtype=np.float32)
    if x.ndim not in (3, 4):
        raise ValueError(f"image must have shape (C, H, W) or (C, D, H, W); got {x.shape}. "
                         "Add the channel axis: image[None].")
    n_mc = _check_positive_int(n_mc, name="n_mc", minimum=0, fix="Pass n_mc=0 for one "
                               "deterministic pass or e.g. n_mc=20.")
    chunk_size = _check_positive_int(chunk_size, name="chunk_size",
                                     fix="It is the number of passes per forward call.")
    if multiple is None:
        multiple = max(int(getattr(m, "multiple", 1)) for m in models)
    return models, x, n_mc, chunk_size, int(multiple)


def mc_segment(
    models: nn.Module | Sequence[nn.Module],
    image: np.ndarray,
    *,
    n_mc: int = 20,
    seed: int = 0,
    device: str | torch.device = "auto",
    chunk_size: int = 1,
    multiple: int | None = None,
    min_shape: Sequence[int] | None = None,
    roi_size: Sequence[int] | None = None,
    overlap: float = 0.25,
) -> VoxelMaps:
    """Segment one image with MC dropout (and an ensemble) and reduce per-voxel maps on the fly.

    Parameters
    ----------
    models : nn.Module or sequence of nn.Module
        Networks mapping ``(B, C_in, *S)`` to logits ``(B, C, *S)``; several form an ensemble.
        Each is run in MC-dropout mode (dropout on, everything else eval) and left as found.
    image : ndarray of shape (C_in, *S)
        One normalised image (see ``segmentation.data.normalize_intensity``).
    n_mc : int >= 0, default 20
        Passes T per model; 0 runs one deterministic (eval-mode) pass.
    seed : int
        See NOTE [Voxel maps reduced on the fly].
    device : "auto", "cpu", "cuda[:i]" or torch.device
    chunk_size : int, default 1
        Passes per forward call; memory is O(chunk_size · C · |S|) for the outputs plus 3C + 2
        maps of running statistics, independent of T.
    multiple : int, optional
        Pad spatial sizes to multiples of this (default: the models' ``multiple`` attribute).
    min_shape : sequence of int, optional
        Pad at least to this spatial shape (e.g. the padded shape the models were trained on,
        so their normalisation layers see the same field of zeros).
    roi_size : sequence of int, optional
        Sliding-window inference (MONAI ``sliding_window_inference``, Gaussian blending) with
        windows of this spatial size, for images larger than the networks were trained on;
        each window of each pass draws its own dropout masks. Multiples of ``multiple``;
        ``min_shape`` is then not used.
    overlap : float in [0, 1), default 0.25
        Overlap of neighbouring windows (with ``roi_size``).

    Returns
    -------
    VoxelMaps
        On the image's own grid (padding removed).
    """
    models, x, n_mc, chunk_size, multiple = _mc_segment_iv(models, image, n_mc, chunk_size,
                                                           multiple)
    shape = x.shape[1:]
    roi = _check_roi(roi_size, len(shape), multiple, overlap)
    floor = roi if roi is not None else min_shape
    target = shape if floor is None else tuple(
        max(a, int(b)) for a, b in zip(shape, floor, strict=True))
    target = pad_multiple(target, multiple)
    xt = torch.from_numpy(pad_to(x, target))
    total = _PassStats()
    ens = StreamingMoments(variance=False)  # over models: p̄_m (and H[p̄_m] below)
    ens_h = StreamingMoments(variance=False)
    for m_idx, model in enumerate(models):
        net, dev = _model_on_device(model, device)
        xd = xt.to(dev)[None]
        own = StreamingMoments(variance=False)
        for c, start in enumerate(range(0, max(n_mc, 1), chunk_size)):
            k = min(chunk_size, max(n_mc, 1) - start)
            logits = _forward(net, xd, k, n_mc > 0, child_seed(seed, m_idx, c), dev, roi,
                              overlap)
            p = torch.softmax(logits.float(), dim=1)
            del logits
            total.add(p)
            if len(models) > 1:
                own.add(p)
            del p
        if len(models) > 1:
            ens.add(own.mean[None])
            ens_h.add(_entropy(own.mean)[None])
    if len(models) > 1:
        return _finish(total, ens.mean, ens_h.mean, shape, n_mc, len(models))
    return _finish(total, None, None, shape, n_mc, len(models))


def _check_roi(roi_size, ndim: int, multiple: int, overlap: float) -> tuple[int, ...] | None:
    if roi_size is None:
        return None
    roi = tuple(int(r) for r in roi_size)
    if len(roi) != ndim or any(r < 1 or r % multiple for r in roi):
        raise ValueError(f"roi_size must give {ndim} positive sizes, each a multiple of "
                         f"{multiple} (the network's down-sampling); got {tuple(roi_size)}. "
                         "E.g. the padded training shape.")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1); got {overlap!r}.")
    return roi


def _forward(net: nn.Module, x: torch.Tensor, k: int, mc: bool, seed: int,
             dev: torch.device, roi: tuple[int, ...] | None = None,
             overlap: float = 0.25) -> torch.Tensor:
    batch = x.expand(k, *x.shape[1:])

    def run(b: torch.Tensor) -> torch.Tensor:
        if roi is None:
            return net(b)
        from monai.inferers import sliding_window_inference

        return sliding_window_inference(b, roi, 1, net, overlap=overlap, mode="gaussian")

    with torch.inference_mode(), seeded_torch(seed, dev):
        if not mc:
            saved = {m: m.training for m in net.modules()}
            try:
                net.eval()
                return run(batch)
            finally:
                for m, flag in saved.items():
                    m.train(flag)
        with mc_dropout_mode(net):
            return run(batch)


def _finish(total: _PassStats, ens_mean, ens_h, shape, n_mc: int, n_models: int) -> VoxelMaps:
    proba = total.p.mean
    entropy = _entropy(proba)
    mi = torch_mutual_info(entropy, total.h.mean)
    seg = proba.argmax(0)
    std = total.p.var.gather(0, seg[None])[0].sqrt()
    dis = None
    if ens_mean is not None:
        dis = torch_mutual_info(_entropy(ens_mean), ens_h)

    def out(t: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(crop_to(t.float().cpu().numpy(), shape))

    return VoxelMaps(out(proba), out(seg).astype(np.uint8), out(entropy), out(mi), out(std),
                     None if dis is None else out(dis), n_mc, n_models)
