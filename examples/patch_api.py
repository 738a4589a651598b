"""Patch-based inference from Python, in a few lines: plan, run the pipeline's Relax passes (the
ones ``patchnet compile`` runs, minus the target's schedules), inspect the TIR, run on the host,
and check the result against the unpatched model.

    .venv/bin/python examples/patch_api.py [MODEL] [--patches P --split N]

MODEL is a .tflite file or a built-in architecture (default: mbv2-w0.35-r144).
"""

import argparse

import numpy as np

from tvm_patchnet.execution import plan_execution
from tvm_patchnet.frontend import load_model
from tvm_patchnet.lower import to_relax
from tvm_patchnet.patch import plan_patches
from tvm_patchnet.patch.search import choose_plan
from tvm_patchnet.patch.stage import lowered_allocations
from tvm_patchnet.pipeline import passes
from tvm_patchnet.runtime import build, run_module


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="mbv2-w0.35-r144")
    ap.add_argument("--patches", type=int)
    ap.add_argument("--split", type=int)
    args = ap.parse_args(argv)

    graph = load_model(args.model)  # the int8 graph (NHWC, TFLite arithmetic)
    plan = plan_patches(graph, args.patches, args.split) if args.patches else choose_plan(graph)
    print(f"{plan.patches}x{plan.patches} patches over blocks 0..{plan.split - 1}: input patch "
          f"{plan.input_patch[0]}x{plan.input_patch[1]}, peak {plan.per_layer_peak_bytes:,} B -> "
          f"{plan.peak_bytes:,} B, MACs +{100 * plan.mac_overhead:.1f}%")

    mod = to_relax(graph)  # one call_tir per op
    execution = plan_execution(graph, plan)  # which kernel runs each op: read by passes, memory plan, C
    pipeline = passes(execution)  # PatchBasedInference -> KernelVariants (+ ApplySchedules with a target)
    print("passes:", " -> ".join(p.info.name for p in pipeline.passes))
    patched = pipeline(mod)  # the stage is one PrimFunc; in-place kernels where the plan says
    tir = patched["tvmgen_default_patch_stage"].script()  # the patched loop nest, as TVMScript
    loops = [ln for ln in tir.splitlines() if ln.lstrip().startswith("for ")]
    print("\n".join(loops[:12]), "\n    ...")
    # what lowering really allocates per patch (TVM's own buffer compaction), against the planner
    for name, (shape, dtype, scope) in lowered_allocations(patched["tvmgen_default_patch_stage"]).items():
        if scope == "global":
            print(f"  patch buffer {name:<12} {shape} {dtype}")
    print(f"  planner workspace: {plan.workspace_bytes:,} B")

    x = np.random.default_rng(0).integers(-128, 128, size=graph.t(graph.inputs[0]).shape, dtype=np.int8)
    ref = run_module(build(mod), [x])
    out = run_module(build(patched), [x])
    same = all(np.array_equal(a, b) for a, b in zip(ref, out))
    print("patched outputs identical to per-layer execution:", same)
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
