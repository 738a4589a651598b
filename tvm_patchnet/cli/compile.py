"""``patchnet compile``: a model to plain C + one static arena, as a Model-Library-Format-like tar."""

from __future__ import annotations

import argparse

from .common import TARGETS, add_board_arg, add_calibration_args, add_model_args, choice, warn_of
from .profile import parse_auto, parse_size


def add_parser(sub) -> None:
    p = sub.add_parser("compile", help="compile a model to C for a Cortex-M board (MLF-like .tar)",
                       description="Emit self-contained C (one entry point, kernels, const weights, one static "
                                   "arena) for the int8 graph, optionally running the first blocks per patch.")
    add_model_args(p)
    add_calibration_args(p)
    p.add_argument("--target", type=choice("target", TARGETS), choices=TARGETS, metavar="TARGET",
                   help=f"CPU core (one of: {', '.join(TARGETS)}; default: the board's, else cortex-m4)")
    add_board_arg(p, "board the archive is meant for; implies its --target, whose memory is checked "
                     "(default: qemu-m4, or qemu-m7 with --target cortex-m7)")
    p.add_argument("--patches", metavar="P|auto", help="patch grid of the first blocks (1 = layer by layer)")
    p.add_argument("--split", metavar="N|auto", help="number of leading blocks run per patch")
    p.add_argument("--sram", metavar="SIZE",
                   help="pick the cheapest patch setting whose arena (as compiled, the whole input in SRAM) "
                        "+ 4 KB minimum stack fits SIZE (e.g. 256KB); layer by layer if that fits")
    p.add_argument("--planner", default="greedy", choices=["greedy", "milp"],
                   help="arena placement: greedy by size, or exact (MILP) where the graph is small enough")
    p.add_argument("--tuning-records", metavar="FILE.jsonl",
                   help="records from 'patchnet tune' for this board: tuned kernels take their best schedule")
    p.add_argument("-o", "--output", default="model.tar",
                   help="output .tar, .tar.gz / .tgz, or a folder; never replaces anything but an earlier output")
    p.set_defaults(drive=drive_compile)


def drive_compile(args: argparse.Namespace) -> int:
    from ..deploy import compile_model

    res = compile_model(args.model, args.output, target=args.target, board=args.board,
                        patches=parse_auto("--patches", args.patches), split=parse_auto("--split", args.split),
                        sram_bytes=parse_size("--sram", args.sram) if args.sram is not None else None,
                        resolution=args.resolution, width=args.width, planner=args.planner,
                        calibration=args.calibration, mean=args.mean, std=args.std, warn=warn_of(args),
                        tuning_records=args.tuning_records)
    m = res.metadata
    how = "layer by layer" if not m["patch"] else (
        f"{m['patch']['patches']}x{m['patch']['patches']} patches over blocks 0..{m['patch']['split'] - 1}")
    print(f"compiled {m['model']} for {m['target']} ({m['board']}), {how}: arena {m['arena_bytes']:,} B "
          f"({m['planner']}; liveness bound {m['arena_lower_bound_bytes']:,} B), constants {m['weight_bytes']:,} B (weights, biases, requantization), "
          f"{m['kernels']} kernels -> {res.path}")
    cal = m["source"].get("calibration")
    if cal and cal["source"] != "random":
        print(f"quantized on {cal['samples']} calibration input(s) from {cal['source']}")
    if res.note:
        print(f"patches: {res.note}")
    if m.get("tuning"):
        t = m["tuning"]
        print(f"tuning records {t['records']}: {t['tuned']} of {t['tunable']} tunable kernels tuned for {m['board']} "
              "(the others: default schedules)")
    if m.get("note"):
        print(f"note: {m['note']}")
    return 0
