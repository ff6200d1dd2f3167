"""Segmentation with uncertainty maps: data, training, MC-dropout voxel maps, prediction.

``calipers cv`` runs :func:`run_segmentation_fold` (through the experiment engine) for
``task = "segmentation"``;
``calipers predict`` runs :func:`predict_folder`.
"""

from calipers.segmentation.data import SegmentationData, load_segmentation
from calipers.segmentation.experiment import run_segmentation_fold
from calipers.segmentation.maps import VoxelMaps, mc_segment
from calipers.segmentation.predict import (
    Predictor,
    PredictResult,
    export_checkpoint,
    load_predictor,
    predict_folder,
)

__all__ = [
    "PredictResult",
    "Predictor",
    "SegmentationData",
    "VoxelMaps",
    "export_checkpoint",
    "load_predictor",
    "load_segmentation",
    "mc_segment",
    "predict_folder",
    "run_segmentation_fold",
]
