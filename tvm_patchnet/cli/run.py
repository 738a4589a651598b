"""``patchnet run``: run a compiled model on a board (emulated by default) and measure it."""

from __future__ import annotations

import argparse
import json
import zipfile

import numpy as np

from ..errors import PatchnetError
from .common import add_board_arg, add_memory_map_arg


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a compiled model on a board and measure it",
                       description="Build the board project, run over the serial RPC, report output, latency "
                                   "(QEMU: executed instructions; Nucleo: cycles and ms), SRAM and flash.")
    p.add_argument("archive", help="a model.tar (or directory) from 'patchnet compile'")
    add_board_arg(p, "board to run on (default: the one compiled for)")
    add_memory_map_arg(p)
    p.add_argument("--input", help="the model's input as .npy, or its inputs as .npz (keys: the input names, or "
                                   "arr_0, arr_1, ... in order), in their shapes and dtypes (int8 or float32); "
                                   "an ONNX model's int8 input also takes a float image in the model's NCHW layout, "
                                   "quantized with the input's scale and zero point; default: seeded random")
    p.add_argument("--repeat", type=int, default=1, help="runs to average the count over")
    p.add_argument("--check", action="store_true", help="also run the host reference and compare every output "
                                                        "(bit for bit; float32: the exact same values)")
    p.add_argument("--check-float", action="store_true",
                   help="ONNX / PyTorch models: also run the float model on the host on the same input and compare "
                        "the board's dequantized outputs with it (max |diff|, cosine, top-1 agreement)")
    p.add_argument("--profile", action="store_true",
                   help="per kernel call: its graph op(s), MACs, executed instructions (QEMU, exact) or cycles "
                        "(Nucleo), per MAC and share of the run (a profile build of the firmware)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="seconds one run may take before the board counts as stalled (default: from the model's MACs)")
    p.add_argument("--serial-port", metavar="DEVICE",
                   help="Nucleo boards: the serial device (default: the one ST-LINK virtual COM port)")
    p.add_argument("--serial-number", metavar="SN", help="Nucleo boards: the ST-LINK serial number, to pick one of "
                                                          "several connected boards")
    p.add_argument("--keep-build", metavar="DIR", help="keep the extracted model and the board project (build log, "
                                                       "firmware) in DIR, a new or empty folder")
    p.set_defaults(drive=drive_run)


def drive_run(args: argparse.Namespace) -> int:
    from ..deploy import run_model

    x = _load_input(args.input) if args.input else None
    if x is not None:
        x = _quantize_float_input(args.archive, args.input, x)
    if args.repeat < 1:
        raise PatchnetError("--repeat must be >= 1")
    rep = run_model(args.archive, board=args.board, memory_map=args.memory_map, x=x, repeat=args.repeat,
                    check=args.check, work_dir=args.keep_build, timeout=args.timeout, profile=args.profile,
                    check_float=args.check_float, serial_port=args.serial_port, serial_number=args.serial_number)
    if args.json:
        print(json.dumps(rep.to_json()))
    else:
        where = rep.board + (f" with the {rep.memory_map} memory map" if rep.memory_map else "")
        if rep.counter == "instructions":
            speed = f"{rep.count:,.0f} executed instructions per run (QEMU: instructions, not cycles)"
        else:
            speed = f"{rep.count:,.0f} cycles per run ({1e3 * rep.count / rep.cpu_hz:.2f} ms at {rep.cpu_hz / 1e6:g} MHz)"
        print(f"ran on {where}: {speed}")
        print(f"SRAM {rep.sram_bytes:,} B measured (.data + .bss + peak stack) = arena {rep.arena_bytes:,} "
              f"(predicted {rep.predicted_arena_bytes:,}; inputs and outputs inside) + stack {rep.stack_peak_bytes:,} "
              f"+ RPC/firmware {rep.other_sram_bytes:,}; flash {rep.flash_bytes:,} B = constants "
              f"{rep.weight_bytes:,} + code {rep.code_bytes:,}")
        gap = rep.arena_bytes - rep.planner_peak_bytes
        why = ("" if not gap else ": the whole input stays in the arena through the patch stage (the planner "
               "counts one patch of it)" if rep.patched else ": the arena's packing and 4-byte alignment")
        print(f"planner's activation peak (paper rule, kernels in place): {rep.planner_peak_bytes:,} B; "
              f"arena {'equal' if not gap else f'{gap:+,} B'}{why}")
        for o, y in zip(rep.outputs, rep.arrays()):  # the first 16 values of each (float32: shortest exact text)
            flat = y.reshape(-1)
            values = ", ".join(str(v) for v in flat[:16]) + (", ..." if flat.size > 16 else "")
            print(f"output '{o['name']}' {o['shape']} {o['dtype']}: [{values}]")
        if rep.profile is not None:
            print_profile(rep)
        if rep.reference_match is not None:
            print("host int8 reference: " + ("identical" if rep.reference_match else
                                             f"MISMATCH in {', '.join(repr(n) for n in rep.mismatches)}"))
        if rep.float_reference is not None:
            rows = rep.float_reference["outputs"]
            for r in rows:
                which = f" '{r['name']}'" if len(rows) > 1 else ""
                print(f"float reference{which}: {format_float_check(r)}")
    if rep.reference_match is False:
        raise PatchnetError(f"output mismatch: the board's output(s) {', '.join(repr(n) for n in rep.mismatches)} "
                            "differ from the host reference")
    return 0


def format_float_check(r: dict) -> str:
    """'max |diff| X (Y% of the output range), cosine C, top-1 agreement A' of one output."""
    rel = f" ({100 * r['max_abs_diff'] / r['output_range']:.2f}% of the output range)" if r["output_range"] else ""
    top1 = "n/a (one value per row)" if r["top1_agreement"] is None else f"{100 * r['top1_agreement']:.0f}%"
    return f"max |diff| {r['max_abs_diff']:.6g}{rel}, cosine {r['cosine']:.6f}, top-1 agreement {top1}"


def print_profile(rep) -> None:
    """The per-kernel table of a profiled run (RunReport.profile)."""
    unit = "instructions" if rep.counter == "instructions" else "cycles"
    rows = [(k.name, ", ".join(k.ops) if k.ops else "(input/output copies, call sequences)",
             f"{k.macs:,}" if k.macs else "-", f"{k.count:,.0f}",
             f"{k.per_mac():.2f}" if k.per_mac() is not None else "-",
             f"{100 * k.count / rep.count:.1f}%" if rep.count else "-") for k in rep.profile]
    macs = sum(k.macs for k in rep.profile)
    rows.append(("total", "", f"{macs:,}", f"{rep.count:,.0f}", f"{rep.count / macs:.2f}" if macs else "-", "100.0%"))
    head = ("kernel call", "op(s)", "MACs", unit, f"{unit[:5]}/MAC", "share")
    ops_w = min(48, max(len(r[1]) for r in [head, *rows]))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(6)]
    widths[1] = ops_w

    def line(r):
        ops = r[1] if len(r[1]) <= ops_w else r[1][:ops_w - 3] + "..."
        return (f"{r[0]:<{widths[0]}}  {ops:<{ops_w}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(r[2:], widths[2:])))

    print(f"profile ({len(rep.profile) - 1} kernel calls; {unit}"
          + (", exact" if unit == "instructions" else "") + f"; the marks' {rep.profile_overhead:,} {unit} "
          "are subtracted, the total is the plain build's):")
    print(line(head))
    for r in rows:
        print(line(r))


def _quantize_float_input(archive: str, path: str, x):
    """A float32 image for an ONNX model's int8 input, in the ONNX model's own NCHW layout (or
    NHWC), quantized with the input's scale and zero point as ``tvm_patchnet.ptq.quantize_input``
    does; anything else is returned as given (``run_model`` checks shapes and dtypes)."""
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        return x
    import tempfile

    from ..archive import read_archive

    with tempfile.TemporaryDirectory(prefix="patchnet-input-") as tmp:
        meta = read_archive(archive, tmp)
    if meta["source"].get("file") != "src/model.onnx" or len(meta["inputs"]) != 1:
        return x
    e = meta["inputs"][0]
    if e["dtype"] != "int8" or e["scale"] is None or len(e["shape"]) != 4:
        return x
    n, h, w, c = e["shape"]
    if x.shape == (n, c, h, w):
        x = x.transpose(0, 2, 3, 1)
    elif x.shape != (n, h, w, c):
        raise PatchnetError(f"{path}: float input of shape {list(x.shape)}; the model takes {[n, c, h, w]} float "
                            f"(NCHW, quantized here) or {[n, h, w, c]} int8")
    if not np.isfinite(x).all():
        raise PatchnetError(f"{path}: the float input holds NaN or infinite values")
    v = x.astype(np.float64) / e["scale"]
    return np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) + e["zero_point"], -128, 127).astype(np.int8)


def _load_input(path: str):
    """An .npy file's array, or an .npz file's arrays by key (never pickled objects)."""
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                return {k: data[k] for k in data.files}
        return data
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise PatchnetError(f"{path}: cannot read input ({str(e).splitlines()[0] if str(e) else type(e).__name__})") \
            from None
