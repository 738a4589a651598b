"""``patchnet profile``: where a model's memory goes (per layer, per block, peak), MACs, weights."""

from __future__ import annotations

import argparse

from ..errors import PatchnetError
from .common import add_model_args, dump_json, write_atomic


def add_parser(sub) -> None:
    p = sub.add_parser("profile", help="per-layer / per-block int8 activation memory, MACs and weights",
                       description="Profile a model's int8 activation memory by the MCUNetV2 paper's rule "
                                   "(in-place depthwise and residual add) and the plain layer-by-layer rule.")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print the stable JSON report instead of tables")
    p.add_argument("--plot", metavar="FILE.png", help="draw per-block peak memory bars (the paper's Figure 1)")
    p.add_argument("--budget", default="256KB", help="SRAM line drawn on the plot (default 256KB)")
    p.add_argument("--list", action="store_true", help="list the built-in architectures and exit")
    p.set_defaults(drive=drive_profile)
    p.set_defaults(model_optional=True)
    p._positionals._group_actions[0].nargs = "?"  # model may be omitted with --list


def drive_profile(args: argparse.Namespace) -> int:
    if args.list:
        from ..zoo import list_architectures

        print("\n".join(list_architectures()))
        return 0
    if not args.model:
        raise PatchnetError("a MODEL is required (a .tflite/.onnx file or a built-in name; see --list)")
    from .common import byte_size

    try:
        budget = byte_size(args.budget)
    except argparse.ArgumentTypeError as e:
        raise PatchnetError(f"--budget: {e}") from None
    report = profile_model(args.model, resolution=args.resolution, width=args.width)
    if args.plot:
        from ..analysis.plot import plot_blocks

        write_atomic(args.plot, plot_blocks(report, budget_bytes=budget))
    if args.json:
        print(dump_json(report.to_json()))
    else:
        print(format_report(report))
        if args.plot:
            print(f"\nplot written to {args.plot}")
    return 0


def profile_model(model: str, resolution: int | None = None, width: float | None = None):
    """Load ``model`` and return its :class:`~tvm_patchnet.analysis.profile.ProfileReport`."""
    from ..analysis.profile import profile
    from ..frontend import load_model

    return profile(load_model(model, resolution=resolution, width=width))


def _kb(b: int) -> str:
    return f"{b / 1024:.1f}"


def format_report(r) -> str:
    """Human-readable tables: per-block summary, then per-layer detail."""
    lines = [
        f"model {r.model}: {len(r.layers)} layers in {len(r.blocks)} blocks, int8",
        f"peak activation memory  {r.peak_bytes:>12,} B  ({_kb(r.peak_bytes)} kB) in block {r.peak_block}"
        "   [paper's rule: in-place depthwise and residual add]",
        f"layer by layer, plain   {r.peak_bytes_no_inplace:>12,} B  ({_kb(r.peak_bytes_no_inplace)} kB)"
        "   [every tensor its own buffer]",
        f"MACs {r.total_macs:,} ({r.total_macs / 1e6:.1f} M)   weights {r.weight_bytes:,} B ({_kb(r.weight_bytes)} kB)",
        "",
        f"{'block':>5} {'layers':>6} {'peak kB':>9} {'plain kB':>9} {'MACs (M)':>9} {'weights kB':>10}",
    ]
    top = max(b.peak_bytes for b in r.blocks) or 1
    for b in r.blocks:
        bar = "#" * max(1, round(30 * b.peak_bytes / top))
        lines.append(f"{b.index:>5} {len(b.layers):>6} {_kb(b.peak_bytes):>9} {_kb(b.peak_bytes_no_inplace):>9} "
                     f"{b.macs / 1e6:>9.2f} {_kb(b.weight_bytes):>10}  {bar}")
    lines += ["", f"{'#':>3} {'blk':>3} {'op':<17} {'input':<18} {'output':<18} {'MACs':>12} {'weights B':>10} "
                  f"{'act B':>10} {'plain B':>10}"]
    for la in r.layers:
        lines.append(f"{la.index:>3} {la.block:>3} {la.op:<17} {_shape(la.input_shape):<18} "
                     f"{_shape(la.output_shape):<18} {la.macs:>12,} {la.weight_bytes:>10,} "
                     f"{la.activation_bytes:>10,} {la.activation_bytes_no_inplace:>10,}")
    return "\n".join(lines)


def _shape(s) -> str:
    return "x".join(str(d) for d in s)
