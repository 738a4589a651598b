"""Tuned vs default vs TFLite Micro + CMSIS-NN, measured on qemu-m4 in one run.

    .venv/bin/python -m benchmarks.tuning [--models kws vww_96 resnet8] [--trials N] [--plot FILE.png]

For each model: compile with the default schedules and run (executed instructions, exact; not
cycles); tune (``tvm_patchnet.tune.tune_model``, MetaSchedule with the XGBoost cost model, each
candidate measured on qemu-m4) for ``--trials`` candidates; compile with the records and run
again with ``--check`` (bit-exact with the host). Prints one table with TFLite Micro + CMSIS-NN's
fixed measured counts beside (``../shared/baselines/tflm-cmsis-nn/counts.txt``: no baseline
firmware is built or run here) and issue 10's targets; ``--plot`` draws the tuning curves (the
tuned kernels' instructions per run against trials, from the records in the order they arrived).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time

from benchmarks.vs_cmsis_nn import COUNTS, model_files, parse_counts

DEFAULT_MODELS = ("kws", "vww_96", "resnet8")
#: issue 10's targets
TARGET_VS_TFLM = 0.8  #: tuned whole model / TFLM + CMSIS-NN (vww_96, resnet8)
TARGET_WITHIN = 0.05  #: vww_96 within 5% of its final result ...
TARGET_MINUTES = 30  #: ... in at most 30 minutes


def measure(path: str, work: str, name: str, records: str | None) -> tuple[int, dict]:
    """Compile ``path`` (with ``records`` if given), run it on qemu-m4 with --check; (count, metadata)."""
    from tvm_patchnet.deploy import compile_model, run_model

    out = os.path.join(work, f"{name}-{'tuned' if records else 'default'}.tar")
    res = compile_model(path, out, target="cortex-m4", board="qemu-m4", tuning_records=records)
    rep = run_model(out, check=True)
    if not rep.reference_match:
        raise SystemExit(f"{name}: the board's output differs from the host's ({rep.mismatches})")
    return int(rep.count), res.metadata


def curve(records: str, tasks) -> list[int]:
    """The tunable kernels' instructions per run, best so far: first with the default schedules
    (recorded first in a fresh records file), then after each measured candidate."""
    best: dict[int, float] = {}
    weight = {i: len(t.steps) for i, t in enumerate(tasks)}
    out = []
    with open(records) as f:
        for line in f:
            idx, rec = json.loads(line)
            secs = rec[1]
            if secs:
                best[idx] = min(best.get(idx, float("inf")), float(secs[0]))
            if len(best) == len(tasks):
                out.append(int(sum(best[i] * weight[i] for i in best)))
    return out  # [0]: the default schedules (the seeds), then after trial 1, 2, ...


def collect(names: list[str], trials: int) -> dict:
    from tvm_patchnet.frontend import load_model
    from tvm_patchnet.tune import tune_model

    with open(COUNTS) as f:
        baselines = parse_counts(f.read())
    files = model_files(baselines)
    unknown = [n for n in names if n not in files]
    if unknown:
        raise SystemExit(f"tuning: unknown model(s) {', '.join(unknown)}; known: {', '.join(files)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tuning-") as work:
        for name in names:
            print(f"{name}: default ...", file=sys.stderr, flush=True)
            default, meta = measure(files[name], work, name, None)
            records = os.path.join(work, f"{name}.jsonl")
            print(f"{name}: tuning {trials} trials ...", file=sys.stderr, flush=True)
            start = time.monotonic()
            rep = tune_model(load_model(files[name]), "qemu-m4", trials, records)
            minutes = (time.monotonic() - start) / 60
            tuned, _ = measure(files[name], work, name, records)
            c = curve(records, rep.tasks)
            final = c[-1] if c else None
            reached = next((k for k, v in enumerate(c) if final and v <= final * (1 + TARGET_WITHIN)), None)
            rows.append({"model": name, "macs": meta["profile"]["total_macs"], "default": default, "tuned": tuned,
                         "tflm": baselines[name].total, "trials": trials, "minutes": round(minutes, 1),
                         "tasks": len(rep.tasks), "curve": c, "within_5pct_at_trial": reached})
    return {"unit": "instructions (QEMU mps2-an386, executed; not cycles)", "baseline_source": COUNTS, "models": rows}


def report(d: dict) -> str:
    head = ("model", "default", "tuned", "speed-up", "TFLM+CMSIS-NN", "tuned/TFLM", "tuned/MAC", "kernels", "trials",
            "minutes")
    rows = [(r["model"], f"{r['default']:,}", f"{r['tuned']:,}", f"{r['default'] / r['tuned']:.2f}x", f"{r['tflm']:,}",
             f"{r['tuned'] / r['tflm']:.2f}x", f"{r['tuned'] / r['macs']:.2f}", r["tasks"], r["trials"], r["minutes"])
            for r in d["models"]]
    w = [max(len(str(x[i])) for x in [head, *rows]) for i in range(len(head))]
    lines = [("Tuned vs default schedules vs TFLite Micro + CMSIS-NN on qemu-m4: executed instructions per run, not "
              "cycles (TFLM: the fixed measured counts; ours: compiled, tuned and run now, --check bit-exact)."), ""]
    lines += ["  ".join(f"{v!s:<{w[i]}}" if i == 0 else f"{v!s:>{w[i]}}" for i, v in enumerate(x)) for x in [head, *rows]]
    lines += ["", "Targets (issue 10):"]
    for r in d["models"]:
        if r["model"] in ("vww_96", "resnet8"):
            ratio = r["tuned"] / r["tflm"]
            lines.append(f"  {r['model']}: tuned <= {TARGET_VS_TFLM}x TFLM+CMSIS-NN: {ratio:.2f}x "
                         f"{'met' if ratio <= TARGET_VS_TFLM else 'NOT met'}")
        if r["model"] == "vww_96":
            at = r["within_5pct_at_trial"]
            lines.append(f"  vww_96 within 5% of its final result in <= {TARGET_MINUTES} min: at trial {at} of "
                         f"{r['trials']}, the whole tuning {r['minutes']} min "
                         f"{'met' if r['minutes'] <= TARGET_MINUTES else 'NOT met'}")
    return "\n".join(lines)


def plot(d: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6), dpi=120)
    for r in d["models"]:
        if r["curve"]:
            base = r["curve"][0]
            ax.plot(range(len(r["curve"])), [v / base for v in r["curve"]], label=r["model"])
    ax.set_xlabel("trials (measured candidates; 0: the default schedules)")
    ax.set_ylabel("tunable kernels' instructions\n(relative to the default schedules)")
    ax.set_title("Tuning on qemu-m4: best so far, per model", fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    from tvm_patchnet.fsutil import write_atomic

    write_atomic(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="NAME",
                    help="counts.txt names (default: kws vww_96 resnet8)")
    ap.add_argument("--trials", type=int, default=48, help="measured candidates per model (default 48)")
    ap.add_argument("--plot", metavar="FILE.png", help="draw the tuning curves")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    d = collect(args.models, args.trials)
    if args.plot:
        plot(d, args.plot)
    print(json.dumps(d, indent=1) if args.json else report(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
