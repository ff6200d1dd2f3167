"""Data sets: built-in digits, ``.npz`` arrays, class-folder images and CSV tables."""

from calipers.data.dataset import TASKS, Dataset, make_dataset
from calipers.data.loaders import (
    KINDS,
    load_arrays,
    load_dataset,
    load_digits,
    load_images,
    load_table,
    load_uci,
)

__all__ = [
    "KINDS",
    "TASKS",
    "Dataset",
    "load_arrays",
    "load_dataset",
    "load_digits",
    "load_images",
    "load_table",
    "load_uci",
    "make_dataset",
]
