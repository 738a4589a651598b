"""Our compiled models against TensorFlow Lite Micro + CMSIS-NN on the emulated Cortex-M4, per model
and per layer kind, in executed instructions (QEMU mps2-an386; never cycles).

Run from the repository root: ``python -m benchmarks.vs_cmsis_nn [--models NAME ...] [--json]``.

Ours is measured now: every model of ``/work/shared/models`` that has a baseline in
``counts.txt`` is compiled layer by layer and run on qemu-m4 with ``patchnet run --profile``
(:func:`tvm_patchnet.deploy.run_model` with ``profile=True``: exact instructions per kernel call),
and so is the main job, ``mbv2-w0.35-r144`` with ``--patches auto --split auto --sram 256KB`` (no
baseline). The TFLM + CMSIS-NN figures are the fixed measured counts of
``/work/shared/baselines/tflm-cmsis-nn/counts.txt``, parsed from the file (there is no baseline
firmware here: it is not re-run). Per layer, the baseline's per-op counts (in the TFLite model's
op order) are mapped to our kernel calls through our op names (the TFLite importer names op ``i``
``<builtin op>_<i>``); a call that runs several ops (a conv and its residual add) is compared with
the sum of those ops, and baseline ops that are not calls of ours (RESHAPE: a view) count under
"other". MACs are our profiler's (:func:`tvm_patchnet.analysis.profile.op_macs`; a patch stage's
with its overlap) on both sides.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field

MODELS_DIR = "/work/shared/models"
COUNTS = "/work/shared/baselines/tflm-cmsis-nn/counts.txt"
MAIN_JOB = "mbv2-w0.35-r144"
MAIN_JOB_ARGS = {"patches": "auto", "split": "auto", "sram_bytes": 256 * 1024}
MAIN_JOB_FLAGS = "--patches auto --split auto --sram 256KB"
KINDS = ("1x1 conv (C >= 16)", "1x1 conv (C < 16)", "depthwise 3x3", "depthwise kxk", "stem / other conv", "FC",
         "patch stage", "other")
#: issue 9's targets: (what, limit, unit)
TARGET_RATIO = 1.0  #: whole model: our instructions / TFLM + CMSIS-NN's
TARGET_MAIN_PER_MAC = 4.0  #: main job: instructions per MAC
TARGET_KIND_PER_MAC = {"1x1 conv (C >= 16)": 2.0, "depthwise 3x3": 8.0}
#: main job: patched instructions over layer by layer may exceed its MAC overhead by this much
TARGET_PATCH_EXTRA = 0.05
#: the main job compiled layer by layer (for the patched one's overhead)
MAIN_JOB_LAYER = MAIN_JOB + " (layer by layer)"


@dataclass
class Baseline:
    """One model of counts.txt: one Invoke's instructions, TFLM's arena bytes, and per op (in the
    model's op order) its index, builtin name and instructions."""

    name: str
    total: int
    arena: int
    ops: list[tuple[int, str, int]] = field(default_factory=list)

    @property
    def outside_ops(self) -> int:
        """Instructions of the Invoke outside every op (the interpreter's own)."""
        return self.total - sum(n for _, _, n in self.ops)


def parse_counts(text: str) -> dict[str, Baseline]:
    """counts.txt: ``MODEL <name> total <n> arena <bytes>`` then ``OP <index> <op> <n>`` lines, up to
    ``DONE``. Checks that op indices run 0, 1, ... and that the ops sum to at most the total (the
    rest is the Invoke's own work outside the ops)."""
    out: dict[str, Baseline] = {}
    cur = None
    for k, line in enumerate(text.splitlines(), 1):
        f = line.split()
        if not f or f[0].startswith("#"):
            continue
        if f[0] == "DONE":
            break
        if f[0] == "MODEL" and len(f) == 6 and f[2] == "total" and f[4] == "arena":
            cur = out[f[1]] = Baseline(f[1], int(f[3]), int(f[5]))
        elif f[0] == "OP" and len(f) == 4 and cur is not None:
            if int(f[1]) != len(cur.ops):
                raise ValueError(f"counts.txt line {k}: op {f[1]} of {cur.name} out of order")
            cur.ops.append((int(f[1]), f[2], int(f[3])))
        else:
            raise ValueError(f"counts.txt line {k}: cannot parse {line!r}")
    for b in out.values():
        if sum(n for _, _, n in b.ops) > b.total:
            raise ValueError(f"counts.txt: {b.name}'s ops sum to {sum(n for _, _, n in b.ops):,}, more than its "
                             f"total {b.total:,}")
    return out


def model_files(baselines: dict[str, Baseline], models_dir: str = MODELS_DIR) -> dict[str, str]:
    """Baseline name -> the one .tflite of ``models_dir`` whose name contains it (vww_96 ->
    mlperftiny_vww_96_int8.tflite). Names with no file or several are left out."""
    files = sorted(glob.glob(os.path.join(models_dir, "*.tflite")))
    out = {}
    for name in baselines:
        hits = [f for f in files if re.search(rf"(^|_){re.escape(name)}(_|$)", os.path.basename(f)[:-7])]
        if len(hits) == 1:
            out[name] = hits[0]
    return out


_OP_NAME = re.compile(r"^([a-z0-9_]+?)_(\d+)$")


def tflite_index(op_name: str) -> tuple[str, int] | None:
    """(BUILTIN_OP, index) of an op our TFLite importer named ``<builtin op>_<index>``."""
    m = _OP_NAME.match(op_name)
    return (m.group(1).upper(), int(m.group(2))) if m else None


def baseline_per_call(calls: list[dict], base: Baseline) -> tuple[list[int | None], int]:
    """Per call of ours, the baseline's instructions for the same ops (None when an op of the call
    has no baseline op), and the baseline's instructions outside every call (ops we run as
    views, e.g. RESHAPE). Each op's builtin name must agree with counts.txt's."""
    by_index = {i: (op, n) for i, op, n in base.ops}
    used, per_call = set(), []
    for c in calls:
        total = 0
        for name in c["ops"]:
            t = tflite_index(name)
            if t is None or t[1] not in by_index:
                total = None
                break
            op, n = by_index[t[1]]
            if op != t[0]:
                raise ValueError(f"{base.name}: our op '{name}' is TFLite op {t[1]}, which counts.txt calls {op}")
            used.add(t[1])
            total += n
        per_call.append(total)
    return per_call, sum(n for i, _, n in base.ops if i not in used) + base.outside_ops


def kind_of(graph, op_names: list[str]) -> str:
    """A call's layer kind, from its first op (a conv + residual add is the conv's kind)."""
    if len(op_names) > 2 or (len(op_names) == 2 and graph.ops[_op_index(graph, op_names[1])].kind != "add"):
        return "patch stage"
    op = graph.ops[_op_index(graph, op_names[0])]
    if op.kind == "fully_connected":
        return "FC"
    if op.kind not in ("conv2d", "depthwise_conv2d"):
        return "other"
    _, kh, kw, cin = graph.t(op.inputs[1]).shape
    if op.kind == "depthwise_conv2d":
        return "depthwise 3x3" if (kh, kw) == (3, 3) else "depthwise kxk"
    if (kh, kw) == (1, 1):
        cout = graph.t(op.outputs[0]).shape[-1]
        return "1x1 conv (C >= 16)" if min(cin, cout) >= 16 else "1x1 conv (C < 16)"
    return "stem / other conv"


def _op_index(graph, name: str) -> int:
    return next(i for i, op in enumerate(graph.ops) if op.name == name)


def measure(model: str, work: str, **compile_args) -> tuple[dict, object, object]:
    """Compile ``model`` for qemu-m4 and run it with the profile: (metadata, RunReport, graph)."""
    from tvm_patchnet.deploy import compile_model, run_model
    from tvm_patchnet.frontend import load_model

    out = os.path.join(work, re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(model)) + ".tar")
    res = compile_model(model, out, target="cortex-m4", board="qemu-m4", **compile_args)
    rep = run_model(out, profile=True)
    if rep.counter != "instructions":
        raise RuntimeError(f"{model}: QEMU gave no instruction count (the plugin did not load)")
    return res.metadata, rep, load_model(model)


def per_mac(n, macs):
    return n / macs if macs and n is not None else None


def collect(names: list[str] | None) -> dict:
    """Measure the chosen models (default: every one with a baseline, then the main job)."""
    with open(COUNTS) as f:
        baselines = parse_counts(f.read())
    files = model_files(baselines)
    wanted = names or [*files, MAIN_JOB]
    if MAIN_JOB in wanted:  # the patched main job's overhead is measured against it
        wanted.append(MAIN_JOB_LAYER)
    unknown = [n for n in wanted if n not in files and n not in (MAIN_JOB, MAIN_JOB_LAYER)]
    if unknown:
        raise SystemExit(f"vs_cmsis_nn: unknown model(s) {', '.join(unknown)}; known: {', '.join([*files, MAIN_JOB])}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="vs-cmsis-nn-") as work:
        for name in wanted:
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            main = name in (MAIN_JOB, MAIN_JOB_LAYER)
            meta, rep, graph = measure(MAIN_JOB if main else files[name], work,
                                       **(MAIN_JOB_ARGS if name == MAIN_JOB else {}))
            base = None if main else baselines[name]
            base_calls, base_rest = baseline_per_call(meta["calls"], base) if base else ([None] * len(meta["calls"]), None)
            calls = []
            for c, k, b in zip(meta["calls"], rep.profile, base_calls):
                calls.append({"name": c["name"], "ops": c["ops"], "kind": kind_of(graph, c["ops"]), "macs": c["macs"],
                              "instructions": k.count, "per_mac": per_mac(k.count, c["macs"]),
                              "baseline_instructions": b, "baseline_per_mac": per_mac(b, c["macs"])})
            macs = sum(c["macs"] for c in meta["calls"])
            rows.append({
                "model": name, "file": None if main else files[name],
                "compile": MAIN_JOB_FLAGS if name == MAIN_JOB else "layer by layer", "patched": rep.patched,
                "instructions": rep.count, "macs": macs, "per_mac": per_mac(rep.count, macs),
                "outside_kernels": rep.profile[-1].count,
                "baseline_instructions": base.total if base else None,
                "baseline_per_mac": per_mac(base.total, macs) if base else None,
                "baseline_outside_calls": base_rest,
                "ratio": rep.count / base.total if base else None,
                "calls": calls,
            })
    return {"unit": "instructions (QEMU mps2-an386, executed; not cycles)", "baseline_source": COUNTS,
            "baseline_note": "fixed figures measured once with TFLite Micro + CMSIS-NN; no baseline firmware "
                             "is built or run here", "models": rows, "kinds": by_kind(rows), "targets": targets(rows)}


def by_kind(rows: list[dict]) -> list[dict]:
    """Instructions per MAC per layer kind: ours and the baseline's over the models with a
    baseline (the same calls on both sides), and ours over the main job."""
    out = []
    for kind in KINDS:
        agg = {"kind": kind}
        for key, sel in (("baseline_models", lambda r: r["baseline_instructions"] is not None),
                         ("main_job", lambda r: r["model"] == MAIN_JOB)):
            cs = [c for r in rows if sel(r) for c in r["calls"] if c["kind"] == kind]
            macs = sum(c["macs"] for c in cs)
            ours = sum(c["instructions"] for c in cs)
            agg[key] = {"calls": len(cs), "macs": macs, "instructions": ours, "per_mac": per_mac(ours, macs)}
            if key == "baseline_models":
                theirs = [c["baseline_instructions"] for c in cs]
                ok = all(t is not None for t in theirs)
                agg[key]["baseline_instructions"] = sum(theirs) if ok and cs else None
                agg[key]["baseline_per_mac"] = per_mac(sum(theirs), macs) if ok and cs else None
        if kind == "other":  # what runs outside the calls / ops counts here (per_mac: the MACs are 0 anyway)
            b = agg["baseline_models"]
            b["instructions"] += sum(r["outside_kernels"] for r in rows if r["baseline_instructions"] is not None)
            if b["baseline_instructions"] is not None:
                b["baseline_instructions"] += sum(r["baseline_outside_calls"] or 0 for r in rows)
        if agg["baseline_models"]["calls"] or agg["main_job"]["calls"]:
            out.append(agg)
    return out


def targets(rows: list[dict]) -> list[dict]:
    """Issue 9's targets beside the figures, each met or not (None: nothing measured)."""
    out = []
    for r in rows:
        if r["ratio"] is not None:
            out.append({"target": f"{r['model']}: whole model <= {TARGET_RATIO:.1f}x TFLM+CMSIS-NN",
                        "value": r["ratio"], "shown": f"{r['ratio']:.2f}x", "met": r["ratio"] <= TARGET_RATIO})
        if r["model"] == MAIN_JOB:
            out.append({"target": f"main job ({MAIN_JOB}, {MAIN_JOB_FLAGS}) <= {TARGET_MAIN_PER_MAC:.1f} instr/MAC",
                        "value": r["per_mac"], "shown": f"{r['per_mac']:.2f} instr/MAC",
                        "met": r["per_mac"] <= TARGET_MAIN_PER_MAC})
    by_name = {r["model"]: r for r in rows}
    if MAIN_JOB in by_name and MAIN_JOB_LAYER in by_name:
        p, q = by_name[MAIN_JOB], by_name[MAIN_JOB_LAYER]
        extra, mac_extra = p["instructions"] / q["instructions"] - 1, p["macs"] / q["macs"] - 1
        out.append({"target": f"main job patched vs layer by layer: instructions <= MACs overhead + "
                              f"{100 * TARGET_PATCH_EXTRA:.0f}%",
                    "value": extra, "shown": f"instructions {100 * extra:+.1f}%, MACs {100 * mac_extra:+.1f}%",
                    "met": extra <= mac_extra + TARGET_PATCH_EXTRA})
    for kind, limit in TARGET_KIND_PER_MAC.items():
        cs = [(r["model"], c) for r in rows for c in r["calls"] if c["kind"] == kind]
        macs = sum(c["macs"] for _, c in cs)
        v = per_mac(sum(c["instructions"] for _, c in cs), macs)
        worst = max(cs, key=lambda mc: mc[1]["per_mac"] or 0, default=None)
        out.append({"target": f"{kind}, every measured model, <= {limit:g} instr/MAC", "value": v,
                    "shown": "-" if v is None else f"{v:.2f} instr/MAC over {len(cs)} calls (worst "
                                                   f"{worst[0]}/{worst[1]['name']} {worst[1]['per_mac']:.2f})",
                    "met": None if v is None else v <= limit})
    return out


def _f(v, fmt="{:.2f}"):
    return "-" if v is None else fmt.format(v)


def _table(head, rows, left: int = 1) -> list[str]:
    """Columns: the first ``left`` aligned left, the others right."""
    w = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    return ["  ".join(f"{v!s:<{w[i]}}" if i < left else f"{v!s:>{w[i]}}" for i, v in enumerate(r)).rstrip()
            for r in [head, *rows]]


def report(d: dict) -> str:
    lines = [("Ours vs TensorFlow Lite Micro + CMSIS-NN on qemu-m4 (QEMU mps2-an386, Cortex-M4F): executed "
             "instructions, not cycles."),
             (f"TFLM + CMSIS-NN: the fixed measured figures of {d['baseline_source']} (there is no baseline firmware "
             "here: it is not rebuilt or re-run). Ours: compiled and run now, with the per-kernel profile."), ""]
    rows = [(r["model"], r["compile"], f"{r['instructions']:,.0f}", _f(r["baseline_instructions"], "{:,}"),
             _f(r["ratio"], "{:.2f}x"), f"{r['macs']:,}", _f(r["per_mac"]), _f(r["baseline_per_mac"]))
            for r in d["models"]]
    lines += _table(("model", "compiled", "ours (instr)", "TFLM+CMSIS-NN (instr)", "ratio", "MACs",
                     "ours instr/MAC", "TFLM instr/MAC"), rows, left=2)
    lines += ["", ("Per layer kind, instructions per MAC (ours per kernel call; TFLM + CMSIS-NN per op, the same ops; "
              "a conv with its residual add is one call):")]
    rows = []
    for k in d["kinds"]:
        b, m = k["baseline_models"], k["main_job"]
        rows.append((k["kind"], b["calls"] or "-", f"{b['instructions']:,}" if b["calls"] else "-",
                     _f(b.get("baseline_instructions") if b["calls"] else None, "{:,}"),
                     _f(b["per_mac"] if b["calls"] else None), _f(b.get("baseline_per_mac") if b["calls"] else None),
                     m["calls"] or "-", _f(m["per_mac"] if m["calls"] else None)))
    lines += _table(("layer kind", "calls", "ours (instr)", "TFLM+CMSIS-NN (instr)", "ours instr/MAC",
                     "TFLM instr/MAC", f"calls ({MAIN_JOB})", "ours instr/MAC"), rows)
    lines += ["", "Targets (issue 9):"]
    lines += _table(("target", "measured", "status"),
                    [(t["target"], t["shown"], "-" if t["met"] is None else "met" if t["met"] else "NOT met")
                     for t in d["targets"]], left=3)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", metavar="NAME",
                    help=f"a subset: counts.txt names (vww_96, resnet8, kws, str_ww, ad01) and/or {MAIN_JOB}")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    args = ap.parse_args(argv)
    d = collect(args.models)
    print(json.dumps(d, indent=1) if args.json else report(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
