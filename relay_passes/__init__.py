"""Graph-level passes. TVM 0.25+ has no Relay: these are Relax module passes."""

from .patch_based_inference import PatchBasedInference

__all__ = ["PatchBasedInference"]
