"""Graph-level passes. TVM 0.25+ has no Relay: these are Relax module passes, in pipeline order
(:mod:`tvm_patchnet.pipeline`): PatchBasedInference -> KernelVariants -> ApplySchedules."""

from .kernel_variants import ApplySchedules, KernelVariants
from .patch_based_inference import PatchBasedInference

__all__ = ["ApplySchedules", "KernelVariants", "PatchBasedInference"]
