"""Permutation inference for voxelwise GLMs (randomise conventions), on CPU or CUDA.

``permutation_test`` works on arrays; ``permute_images`` reads and writes NIfTI like randomise.
"""

from calipers.permutation.api import PermutationResult, permutation_test
from calipers.permutation.images import PermuteOutputs, load_images, permute_images

__all__ = [
    "PermutationResult",
    "PermuteOutputs",
    "load_images",
    "permutation_test",
    "permute_images",
]
