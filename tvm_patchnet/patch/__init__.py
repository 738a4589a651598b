"""Patch-based inference: the planner (regions, memory, MACs) and the patched TIR stage."""

from .planner import PatchPlan, Region, plan_patches

__all__ = ["PatchPlan", "Region", "plan_patches"]
