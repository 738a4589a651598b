"""``patchnet profile``: where a model's memory goes (per layer, per block, peak), MACs, weights."""

from __future__ import annotations

import argparse

from ..errors import PatchnetError
from ..fsutil import write_atomic
from .common import add_calibration_args, add_model_args, dump_json, warn_of


def add_parser(sub) -> None:
    p = sub.add_parser("profile", help="per-layer / per-block int8 activation memory, MACs and weights",
                       description="Profile a model's int8 activation memory by the MCUNetV2 paper's rule "
                                   "(in-place depthwise and residual add) and the plain layer-by-layer rule.")
    add_model_args(p, optional=True)  # may be omitted with --list
    add_calibration_args(p)
    p.add_argument("--patches", metavar="P|auto", help="run the first blocks on a P x P grid of patches")
    p.add_argument("--split", metavar="N|auto", help="number of leading blocks run per patch (stem = block 0)")
    p.add_argument("--sram", metavar="SIZE", help="pick the lowest MAC overhead whose deployable arena (what 'compile' places, the whole "
                        "input in SRAM) + 4 KB minimum stack fits SIZE (e.g. 256KB); layer by layer if that fits")
    p.add_argument("--json", action="store_true", help="print the stable JSON report instead of tables")
    p.add_argument("--plot", metavar="FILE.png", help="draw per-block peak memory bars (the paper's Figure 1)")
    p.add_argument("--budget", default="256KB", help="SRAM line drawn on the plot (default 256KB)")
    p.add_argument("--list", action="store_true", help="list the built-in architectures and exit")
    p.set_defaults(drive=drive_profile)


def drive_profile(args: argparse.Namespace) -> int:
    if args.list:
        from ..zoo import list_architectures

        print("\n".join(list_architectures()))
        return 0
    if not args.model:
        raise PatchnetError("a MODEL is required (a .tflite/.onnx file or a built-in name; see --list)")
    budget = parse_size("--budget", args.budget)
    sram = parse_size("--sram", args.sram) if args.sram is not None else None
    patches, split = parse_auto("--patches", args.patches), parse_auto("--split", args.split)
    report = profile_model(args.model, resolution=args.resolution, width=args.width,
                           patches=patches, split=split, sram_bytes=sram, calibration=args.calibration,
                           mean=args.mean, std=args.std, warn=warn_of(args))
    if args.plot:
        from ..analysis.plot import plot_blocks

        patched = _patched_block_peaks(report)
        write_atomic(args.plot, plot_blocks(report, budget_bytes=budget if sram is None else sram, patched=patched))
    if args.json:
        print(dump_json(report.to_json()))
    else:
        print(format_report(report))
        if args.plot:
            print(f"\nplot written to {args.plot}")
    return 0


def parse_size(flag: str, text: str) -> int:
    from .common import byte_size

    try:
        return byte_size(text)
    except argparse.ArgumentTypeError as e:
        raise PatchnetError(f"{flag}: {e}") from None


def parse_auto(flag: str, text: str | None):
    """None, "auto" or a positive int."""
    if text is None or text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise PatchnetError(f"{flag}: expected a positive integer or 'auto', got '{text}'")
    return int(text)


def profile_model(model: str, resolution: int | None = None, width: float | None = None,
                  patches=None, split=None, sram_bytes: int | None = None, calibration=None, mean=None, std=None,
                  warn=None):
    """Load ``model`` and return its :class:`~tvm_patchnet.analysis.profile.ProfileReport`.

    With ``patches``/``split`` (ints or "auto") the report's ``patch`` field holds the patch
    plan's figures (:meth:`~tvm_patchnet.patch.PatchPlan.to_json`); ``{"patches": 1}`` when
    the chosen execution is layer by layer (it already fits ``sram_bytes``).
    """
    from ..analysis.profile import profile
    from ..frontend import load_model

    graph = load_model(model, resolution=resolution, width=width, calibration=calibration, mean=mean, std=std,
                       warn=warn)
    report = profile(graph)
    if patches is None and split is None and sram_bytes is None:
        return report
    from ..patch.search import resolve

    chosen = resolve(graph, patches, split, sram_bytes)
    plan = chosen.plan
    report.patch = plan.to_json() if plan else {"patches": 1, "split": 0, "peak_bytes": report.peak_bytes,
                                                  "mac_overhead": 0.0, "note": chosen.note or "layer by layer"}
    if plan:
        from ..patch.search import deployable_arena

        # what `patchnet compile` places: the input arrives whole, so it stays in SRAM per tile
        report.patch["arena_bytes_whole_input"] = chosen.arena_bytes or deployable_arena(graph, plan)
        if chosen.note:
            report.patch["note"] = chosen.note
    return report


def _patched_block_peaks(report) -> list[int] | None:
    """Per-block peak under the report's patch plan (stage blocks per patch, others as is)."""
    if not report.patch or report.patch.get("patches", 1) == 1:
        return None
    stage = {int(b): v for b, v in report.patch["patch_block_peaks"].items()}
    return [stage.get(b.index, b.peak_bytes) for b in report.blocks]


def _kb(b: int) -> str:
    return f"{b / 1024:.1f}"


def format_report(r) -> str:
    """Human-readable tables: per-block summary, then per-layer detail."""
    lines = [
        f"model {r.model}: {len(r.layers)} layers in {len(r.blocks)} blocks, int8",
        (f"peak activation memory  {r.peak_bytes:>12,} B  ({_kb(r.peak_bytes)} kB) in block {r.peak_block}"
        "   [paper's rule: in-place depthwise and residual add]"),
        (f"layer by layer, plain   {r.peak_bytes_no_inplace:>12,} B  ({_kb(r.peak_bytes_no_inplace)} kB)"
        "   [every tensor its own buffer]"),
        f"MACs {r.total_macs:,} ({r.total_macs / 1e6:.1f} M)   weights + biases {r.weight_bytes:,} B ({_kb(r.weight_bytes)} kB)",
        *([f"note: {r.note}"] if r.note else []),
        *_patch_lines(r.patch),
        "",
        f"{'block':>5} {'layers':>6} {'peak kB':>9} {'plain kB':>9} {'MACs (M)':>9} {'weights kB':>10}",
    ]
    top = max(b.peak_bytes for b in r.blocks) or 1
    for b in r.blocks:
        bar = "#" * max(1, round(30 * b.peak_bytes / top))
        lines.append(f"{b.index:>5} {len(b.layers):>6} {_kb(b.peak_bytes):>9} {_kb(b.peak_bytes_no_inplace):>9} "
                     f"{b.macs / 1e6:>9.2f} {_kb(b.weight_bytes):>10}  {bar}")
    lines += ["", (f"{'#':>3} {'blk':>3} {'op':<17} {'input':<18} {'output':<18} {'MACs':>12} {'weights B':>10} "
                  f"{'act B':>10} {'plain B':>10}")]
    for la in r.layers:
        lines.append(f"{la.index:>3} {la.block:>3} {la.op:<17} {_shape(la.input_shape):<18} "
                     f"{_shape(la.output_shape):<18} {la.macs:>12,} {la.weight_bytes:>10,} "
                     f"{la.activation_bytes:>10,} {la.activation_bytes_no_inplace:>10,}")
    return "\n".join(lines)


def _patch_lines(p: dict | None) -> list[str]:
    if not p:
        return []
    if p.get("patches", 1) == 1:
        return ["", f"patch-based inference: {p['note']}"]
    ih, iw = p["input_patch"]
    return [
        "",
        (f"patch-based inference: {p['patches']}x{p['patches']} patches over blocks 0..{p['split'] - 1} "
        f"(input patch {ih}x{iw}, output tile {p['tile'][0]}x{p['tile'][1]})"),
        f"  per-patch stage peak  {p['patch_stage_peak_bytes']:>12,} B  ({_kb(p['patch_stage_peak_bytes'])} kB)",
        (f"  whole network peak    {p['peak_bytes']:>12,} B  ({_kb(p['peak_bytes'])} kB), "
        f"{p['memory_reduction']:.1f}x below {p['per_layer_peak_bytes']:,} B"),
        (f"  MAC overhead          stage +{100 * p['stage_mac_overhead']:.1f}%, overall +{100 * p['mac_overhead']:.1f}% "
        f"({p['total_macs_patched']:,} MACs)"),
        (f"  deployable arena      {p['arena_bytes_whole_input']:>12,} B  ({_kb(p['arena_bytes_whole_input'])} kB) "
         "with the whole input in SRAM (what 'patchnet compile' places; --sram and auto judge by it)"),
        *([f"  chosen: {p['note']}"] if p.get("note") else []),
    ]


def _shape(s) -> str:
    return "x".join(str(d) for d in s)
