"""``patchnet tune``: measure candidate schedules of a model's kernels on the board (MetaSchedule,
XGBoost cost model) and append the results to tuning records for ``compile --tuning-records``."""

from __future__ import annotations

import argparse
import json
import os

from .common import add_board_arg, add_calibration_args, add_model_args, warn_of
from .profile import parse_auto

#: local workers by default: one per core (each runs make, then QEMU), at most 4
DEFAULT_WORKERS = max(1, min(4, os.cpu_count() or 1))


def add_parser(sub) -> None:
    p = sub.add_parser("tune", help="tune the model's kernels on the board (MetaSchedule, XGBoost cost model)",
                       description="Search schedules of the model's tunable kernels, measuring every candidate on "
                                   "the board (QEMU: executed instructions; Nucleo: cycles), and append the results "
                                   "to tuning records; compile with --tuning-records to use the best.")
    add_model_args(p)
    add_calibration_args(p)
    add_board_arg(p, "board to measure on (default: qemu-m4)")
    p.add_argument("--trials", type=int, default=32, help="candidates to measure in all (default 32)")
    p.add_argument("--records", default="tune.jsonl", metavar="FILE.jsonl",
                   help="tuning records, appended as results arrive (workloads in FILE.workloads.jsonl); "
                        "tuning again resumes from them (default tune.jsonl)")
    p.add_argument("--patches", metavar="P", help="with --split: tune the model as it runs patched")
    p.add_argument("--split", metavar="N", help="number of leading blocks run per patch")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="K",
                   help=f"measure K candidates at a time on this machine (default {DEFAULT_WORKERS}: its cores, "
                        "at most 4)")
    p.add_argument("--rpc-tracker", metavar="HOST:PORT",
                   help="measure on every worker registered at this TVM RPC tracker ('patchnet micro serve')")
    p.add_argument("--rpc-key", metavar="KEY", help="the workers' key at the tracker (default: the board's name)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the search and of the measured inputs")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(drive=drive_tune)


def drive_tune(args: argparse.Namespace) -> int:
    from ..errors import PatchnetError
    from ..frontend import load_model
    from ..patch.search import resolve
    from ..tune import tune_model

    patches, split = parse_auto("--patches", args.patches), parse_auto("--split", args.split)
    if "auto" in (patches, split):
        raise PatchnetError("tune: give --patches and --split as numbers (the setting you compile)")
    graph = load_model(args.model, resolution=args.resolution, width=args.width, calibration=args.calibration,
                       mean=args.mean, std=args.std, warn=warn_of(args))
    plan = resolve(graph, patches, split, None, "greedy").plan
    if args.rpc_key and not args.rpc_tracker:
        raise PatchnetError("tune: --rpc-key needs --rpc-tracker HOST:PORT")
    rep = tune_model(graph, args.board or "qemu-m4", args.trials, args.records, plan, args.seed, args.workers,
                     args.rpc_tracker, args.rpc_key)
    if args.json:
        print(json.dumps({"board": rep.board, "records": rep.records, "trials": rep.trials, "workers": rep.workers,
                          "trials_run": rep.trials_run, "defaults_measured": rep.defaults, "seeds_measured": rep.seeds,
                          "seconds": round(rep.seconds, 1), "default_total": rep.default_total,
                          "best_total": rep.best_total, "tasks": [vars(t) for t in rep.tasks]}))
        return 0
    if not rep.tasks:
        print(f"{graph.name}: no tunable kernel (tunable: every kernel outside a patch stage, with a loop to tune)")
        return 0
    unit = "instructions" if rep.board.startswith("qemu") else "cycles"
    ran = f"{rep.trials_run} trials" + ("" if rep.trials_run >= rep.trials else
                                        f" (of {rep.trials}: the design spaces have no other candidates)")
    print(f"tuned {graph.name} on {rep.board}: {ran} after {rep.defaults} default schedules and {rep.seeds} seeds, "
          f"in {rep.seconds:.0f} s on {rep.workers}; records -> {rep.records}")
    head = ("kernel", "calls", f"default ({unit})", f"tuned ({unit})", "speed-up", "best schedule", "trials")
    rows = [(t.name, len(t.steps), f"{t.default_count:,}", "-" if t.best_count is None else f"{t.best_count:,}",
             "-" if not t.best_count else f"{t.default_count / t.best_count:.2f}x",
             t.best_schedule or "-", t.trials) for t in rep.tasks]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(f"{v!s:<{w}}" if i == 0 else f"{v!s:>{w}}" for i, (v, w) in enumerate(zip(r, widths))))
    print(f"these kernels per run: {rep.default_total:,} -> {rep.best_total:,} {unit} "
          f"({rep.default_total / max(rep.best_total, 1):.2f}x)")
    return 0
