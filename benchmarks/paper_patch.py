"""MCUNetV2's patch-based inference figures (Table 1, Figures 5 and 8), recomputed by the planner.

Run from the repository root: ``python -m benchmarks.paper_patch [--json FILE]``.

Every "ours" figure is computed at run time by :func:`tvm_patchnet.patch.planner.plan_patches`
(224x224 input, int8). Only the published numbers in ``PAPER_*`` are fixed, and they are printed
under "paper"; "-" means the seed text of the paper gives no figure. Units: kB = 1024 bytes (the
paper's: 1,404,928 B is its 1372kB), M = 10^6 MACs, overheads relative to per-layer MACs.

MACs are counted two ways. "clipped" is the planner's: a patch's regions are cut at the feature
map borders, where padding is filled, not computed. "full" counts every patch at its full size
(the border patches computing their padding too), from the planner's unclipped tile regions.
The split n (blocks 0..n-1 run per patch, the stem is block 0) is chosen as in the paper: the
lowest whole-network peak, ties to the lower overhead; splits the planner rejects (an SE block's
global pool in the stage, more patches than output pixels) are skipped and listed.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from tvm_patchnet.analysis.profile import op_macs
from tvm_patchnet.errors import PatchnetError
from tvm_patchnet.graph import Graph
from tvm_patchnet.patch.planner import PatchPlan, plan_patches
from tvm_patchnet.zoo import get_architecture

RES = 224
P = 4
KB = 1024
MODELS = {"mobilenetv2": "MbV2", "mbv2-rd": "MbV2-RD", "mnasnet": "MnasNet", "fbnet-a": "FBNet-A",
          "mcunet-320kb-1mb": "MCUNet-320kB"}

#: paper, Table 1 (224x224, 4x4 patches) and Sec. 4.4 (n = 5 for MbV2); None: not in the text.
PAPER_T1 = {
    "mobilenetv2": {"n": 5, "patch": 75, "stage_ovh": 0.42, "ovh": 0.10, "stage_macs": 130e6,
                    "per_layer_kb": 1372, "peak_kb": 172, "reduction": 8.0},
    "mbv2-rd": {"n": None, "patch": 63, "stage_ovh": 0.18, "ovh": 0.03, "stage_macs": 73e6,
                "per_layer_kb": None, "peak_kb": 172, "reduction": 8.0},
}
#: paper, Figure 5 / Sec. 4.1 (text gives a range for the others) and Appendix C (MCUNet-320kB).
PAPER_FIG5 = {
    "mobilenetv2": ("8.0x", "+10%"), "mbv2-rd": ("8.0x", "+3%"), "mnasnet": ("3.7-8.0x", "8-17%, larger"),
    "fbnet-a": ("3.7-8.0x", "8-17%"), "mcunet-320kb-1mb": ("3.5-6.1x (App. C)", "-"),
}
PAPER_OVH_MAX = 0.17


def full_stage_macs(graph: Graph, plan: PatchPlan) -> int:
    """Patch-stage MACs with every tile's regions unclipped (padding computed), in MACs."""
    total = 0
    for i in plan.stage_ops:
        op = graph.ops[i]
        _, h, w, _ = graph.t(op.outputs[0]).shape
        per_pixel = op_macs(graph, op) // (h * w)
        total += sum(per_pixel * t.regions[op.outputs[0]].h * t.regions[op.outputs[0]].w for t in plan.tiles)
    return total


def sweep(graph: Graph, patches: int) -> tuple[dict[int, PatchPlan], dict[int, str]]:
    """Plans for every split 1..blocks-1, and the planner's reason for each split it rejects."""
    plans, skipped = {}, {}
    for n in range(1, graph.num_blocks):
        try:
            plans[n] = plan_patches(graph, patches, n)
        except PatchnetError as e:
            skipped[n] = str(e)
    return plans, skipped


def best(plans: dict[int, PatchPlan]) -> PatchPlan:
    """The paper's choice: lowest whole-network peak, ties to the lower MAC overhead."""
    return min(plans.values(), key=lambda p: (p.peak_bytes, p.mac_overhead))


def dw_kernels(graph: Graph, ops) -> list[int]:
    """The distinct depthwise kernel sizes (pixels) among ``ops`` (op indices)."""
    return sorted({graph.t(graph.ops[i].inputs[1]).shape[1] for i in ops if graph.ops[i].kind == "depthwise_conv2d"})


def se_block(graph: Graph) -> int | None:
    """The first block with a global average pool before the classifier (an SE block), or None."""
    last = graph.num_blocks - 1
    blocks = [op.block for op in graph.ops if op.kind == "avg_pool2d" and op.block < last
              and graph.t(op.outputs[0]).shape[1:3] == (1, 1)]
    return min(blocks, default=None)


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table, first column left-aligned, the rest right-aligned."""
    cells = [header, *rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def fmt(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    rule = "-" * len(fmt(header))
    return "\n".join([title, rule, fmt(header), rule, *map(fmt, rows), rule])


def pct(x: float, digits: int = 1) -> str:
    """A fraction as a signed percentage; ``digits=0`` for the paper's published precision."""
    return f"{x * 100:+.{digits}f}%"


def kb(b: float) -> str:
    """Bytes in kB (1024 B)."""
    return f"{b / KB:.1f}"


def mega(m: float, digits: int = 1) -> str:
    """MACs in millions."""
    return f"{m / 1e6:.{digits}f}M"


def ranges(ns: list[int]) -> str:
    """``[5, 6, 7, 9]`` -> ``'5-7, 9'``."""
    out, start = [], ns[0]
    for a, b in zip(ns, ns[1:] + [None]):
        if b != a + 1:
            out.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return ", ".join(out)


class Study:
    """The models at 224x224 and their splits at 4x4 patches, planned once."""

    def __init__(self) -> None:
        self.graphs = {m: get_architecture(m, resolution=RES) for m in MODELS}
        self.sweeps = {m: sweep(g, P) for m, g in self.graphs.items()}
        self.chosen = {m: best(plans) for m, (plans, _) in self.sweeps.items()}


def table1(st: Study) -> tuple[str, list[dict]]:
    """Table 1 rows (MbV2, MbV2-RD), each with the full-patch MAC count beside the planner's."""
    t1 = []
    for m, paper in PAPER_T1.items():
        p = st.chosen[m]
        f = full_stage_macs(st.graphs[m], p)
        t1.append({"model": m, **p.to_json(), "stage_macs_full": f, "stage_mac_overhead_full": f / p.stage_macs - 1,
                   "mac_overhead_full": (f - p.stage_macs) / p.total_macs, "paper": paper})
    spec = [
        ("split n", lambda r: str(r["split"]), lambda q: str(q["n"] or "-")),
        ("input patch (px)", lambda r: "{}x{}".format(*r["input_patch"]), lambda q: f"{q['patch']}x{q['patch']}"),
        ("patch-stage overhead, clipped", lambda r: pct(r["stage_mac_overhead"]), lambda q: pct(q["stage_ovh"], 0)),
        ("patch-stage overhead, full", lambda r: pct(r["stage_mac_overhead_full"]), lambda q: pct(q["stage_ovh"], 0)),
        ("overall overhead, clipped", lambda r: pct(r["mac_overhead"]), lambda q: pct(q["ovh"], 0)),
        ("overall overhead, full", lambda r: pct(r["mac_overhead_full"]), lambda q: pct(q["ovh"], 0)),
        ("patch-stage MACs per layer", lambda r: mega(r["stage_macs"]), lambda q: "-"),
        ("patch-stage MACs, clipped", lambda r: mega(r["stage_macs_patched"]), lambda q: mega(q["stage_macs"], 0)),
        ("patch-stage MACs, full", lambda r: mega(r["stage_macs_full"]), lambda q: mega(q["stage_macs"], 0)),
        ("overall MACs per layer", lambda r: mega(r["total_macs"]), lambda q: "-"),
        ("overall MACs, clipped", lambda r: mega(r["total_macs_patched"]), lambda q: "-"),
        ("per-layer peak (kB)", lambda r: kb(r["per_layer_peak_bytes"]), lambda q: str(q["per_layer_kb"] or "-")),
        ("per-patch peak (kB)", lambda r: kb(r["peak_bytes"]), lambda q: str(q["peak_kb"])),
        ("  of which patch stage (kB)", lambda r: kb(r["patch_stage_peak_bytes"]), lambda q: "-"),
        ("reduction", lambda r: f"{r['memory_reduction']:.1f}x", lambda q: f"{q['reduction']:.1f}x"),
    ]
    rows = [[label] + [c for r in t1 for c in (ours(r), paper(r["paper"]))] for label, ours, paper in spec]
    text = table(f"Table 1: MbV2 vs MbV2-RD, {RES}x{RES}, {P}x{P} patches (clipped: planner; full: padding computed)",
                 ["", "MbV2 ours", "paper", "MbV2-RD ours", "paper"], rows)
    return text, t1


def figure5(st: Study) -> tuple[str, list[dict]]:
    """Figure 5 rows, with notes on skipped splits and on overheads beyond the paper's range."""
    f5, rows, notes = [], [], []
    for m, name in MODELS.items():
        p, (plans, skipped) = st.chosen[m], st.sweeps[m]
        f5.append({"model": m, **p.to_json(), "skipped_splits": skipped,
                   "paper_reduction": PAPER_FIG5[m][0], "paper_overhead": PAPER_FIG5[m][1]})
        rows.append([name, str(p.split), f"{p.input_patch[0]}", kb(p.per_layer_peak_bytes), kb(p.peak_bytes),
                     f"{p.per_layer_peak_bytes / p.peak_bytes:.2f}x", pct(p.mac_overhead), *PAPER_FIG5[m]])
        se = se_block(st.graphs[m])
        if se is not None:
            bad = sorted(n for n in skipped if n > se)
            notes.append(f"{name}: splits n = {ranges(bad)} skipped (infeasible): the stage would contain the "
                         f"SE block {se}'s global pool (planner: {skipped[bad[0]]})")
        if p.mac_overhead > PAPER_OVH_MAX:
            alt = best({q.split: q for q in plans.values() if q.mac_overhead <= PAPER_OVH_MAX})
            notes.append(f"{name}: the lowest peak costs {pct(p.mac_overhead)}; within the paper's "
                         f"{PAPER_OVH_MAX:.0%} the best split is n = {alt.split}: {kb(alt.peak_bytes)} kB, "
                         f"{alt.per_layer_peak_bytes / alt.peak_bytes:.2f}x, {pct(alt.mac_overhead)}")
    text = table(f"Figure 5: {RES}x{RES}, {P}x{P} patches, n = lowest peak (ties: lower overhead), MAC ovh clipped",
                 ["model", "n", "patch", "per-layer kB", "patched kB", "reduction", "MAC ovh",
                  "paper reduction", "paper MAC ovh"], rows)
    return text + "\n" + "\n".join(f"  note: {n}" for n in notes), f5


def figure8(st: Study) -> tuple[str, list[dict], list[dict], dict[int, int]]:
    """Figure 8(a) (MbV2 peak against n, per p) and 8(b) (overhead against p at the Figure 5 split)."""
    g = st.graphs["mobilenetv2"]
    ps, ns = (2, 3, 4, 5), range(1, 11)
    grid = {pp: sweep(g, pp)[0] for pp in ps}
    lowest = {pp: best(grid[pp]).split for pp in ps}
    rows = [[str(n)] + [kb(grid[pp][n].peak_bytes) + ("*" if lowest[pp] == n else " ") if n in grid[pp] else "-"
                        for pp in ps] for n in ns]
    a = table(f"Figure 8(a): MbV2 {RES}x{RES}, whole-network peak (kB) against n; * = lowest for that p "
              "(paper, Sec. 4.4: n = 5 optimal)", ["n"] + [f"p={pp}" for pp in ps], rows)
    f8a = [{"n": n, "patches": pp, "peak_bytes": grid[pp][n].peak_bytes} for pp in ps for n in ns if n in grid[pp]]
    f8b, rows = [], []
    for pp in range(1, 6):
        row = [str(pp)]
        for m in PAPER_T1:
            q = plan_patches(st.graphs[m], pp, st.chosen[m].split)
            f8b.append({"model": m, "patches": pp, "split": q.split, "mac_overhead": q.mac_overhead})
            row += [pct(q.mac_overhead), pct(PAPER_T1[m]["ovh"], 0) if pp == P else "-"]
        rows.append(row)
    b = table(f"Figure 8(b): overall MAC overhead (clipped) against p, MbV2 at n = {st.chosen['mobilenetv2'].split}, "
              f"MbV2-RD at n = {st.chosen['mbv2-rd'].split}", ["p", "MbV2 ours", "paper", "MbV2-RD ours", "paper"], rows)
    return a + "\n\n" + b, f8a, f8b, lowest


def differences(st: Study, t1: list[dict], f5: list[dict], lowest: dict[int, int]) -> list[str]:
    """Every difference from the paper's figures, with its reason, worded from the numbers."""
    diffs = []
    for r in t1:
        m, q = r["model"], r["paper"]
        near = "full" if abs(r["stage_macs_full"] - q["stage_macs"]) < abs(r["stage_macs_patched"] - q["stage_macs"]) \
            else "clipped"
        diffs.append(f"{MODELS[m]} patch-stage MACs: ours {mega(r['stage_macs_patched'])} "
                     f"({pct(r['stage_mac_overhead'])}) clipped, {mega(r['stage_macs_full'])} "
                     f"({pct(r['stage_mac_overhead_full'])}) full, paper {mega(q['stage_macs'], 0)} "
                     f"({pct(q['stage_ovh'], 0)}): the paper's figure matches our {near} count. The paper computes "
                     "every patch at full size, border padding included; the planner clips regions at the map "
                     "borders (padding is filled, not computed).")
        implied = (q["stage_macs"] - q["stage_macs"] / (1 + q["stage_ovh"])) / r["total_macs"]
        near = "clipped" if abs(r["mac_overhead"] - q["ovh"]) < abs(r["mac_overhead_full"] - q["ovh"]) else "full"
        diffs.append(f"{MODELS[m]} overall overhead: ours {pct(r['mac_overhead'])} clipped, "
                     f"{pct(r['mac_overhead_full'])} full, paper {pct(q['ovh'], 0)}, nearer our {near} count. The "
                     f"paper's own patch-stage figures ({mega(q['stage_macs'], 0)} at {pct(q['stage_ovh'], 0)}) over "
                     f"our {mega(r['total_macs'])} network imply {pct(implied)}: its two columns do not follow from "
                     "one MAC count.")
    mb, rd = t1
    same = round(mb["per_layer_peak_bytes"] / KB) == 1372 and round(mb["peak_bytes"] / KB) == 172
    diffs.append(f"Peak memory: ours {mb['per_layer_peak_bytes']:,} B = {kb(mb['per_layer_peak_bytes'])} kB per layer, "
                 f"{mb['peak_bytes']:,} B = {kb(mb['peak_bytes'])} kB patched; the paper's 1372kB and 172kB "
                 + ("are the same bytes in 1024-byte kB, rounded." if same else "differ."))
    diffs.append(f"MbV2-RD's block list is inferred (Figure 4 is not in the text; see tvm_patchnet/zoo/mbv2_rd.py): "
                 f"its stage has one block fewer, so the same 28x28 split is n = {rd['split']} (MbV2: n = "
                 f"{mb['split']}); its MACs are {mega(rd['total_macs'])} against MbV2's {mega(mb['total_macs'])}.")
    diffs.append("Figure 5 also has OFA-CPU, which the zoo does not build; MCUNet-320kB comes from Appendix C "
                 "(Figure 11), whose resolution the text does not give; here it runs at 224 like the others.")
    red = [r["memory_reduction"] for r in f5 if r["model"] != "mbv2-rd"]
    ovh = [r["mac_overhead"] for r in f5 if r["model"] != "mbv2-rd"]
    diffs.append(f"Figure 5 range (MbV2-RD aside, as in the paper): ours {min(red):.1f}-{max(red):.1f}x at "
                 f"{min(ovh):.1%}-{max(ovh):.1%} MAC overhead, paper 3.7-8.0x at 8-17% (per-model values are only "
                 "in the figure).")
    g, mn = st.graphs["mnasnet"], st.chosen["mnasnet"]
    big = min(op.block for op in g.ops if op.kind == "depthwise_conv2d" and g.t(op.inputs[1]).shape[1] > 3)
    diffs.append(f"MnasNet: the paper gives it a larger overhead (large kernels early); ours is {pct(mn.mac_overhead)} "
                 f"at n = {mn.split}, whose stage has depthwise kernels {dw_kernels(g, mn.stage_ops)} only: "
                 f"MnasNet-A1's first larger kernel is in block {big} and its first SE block is block {se_block(g)}, "
                 "so no feasible stage reaches them (the paper's MnasNet may be a variant without SE).")
    g, mc = st.graphs["mcunet-320kb-1mb"], st.chosen["mcunet-320kb-1mb"]
    plans = st.sweeps["mcunet-320kb-1mb"][0]
    rest = min(plans[n].rest_peak_bytes for n in plans if n < mc.split)
    diffs.append(f"MCUNet-320kB: for every split below n = {mc.split} the layer-by-layer rest still peaks at >= "
                 f"{kb(rest)} kB (blocks that read 56x56 maps); a stage covering them has depthwise kernels "
                 f"{dw_kernels(g, mc.stage_ops)}, so its input patch grows to {mc.input_patch[0]} px and the MACs by "
                 f"{pct(mc.mac_overhead)}: {mc.per_layer_peak_bytes / mc.peak_bytes:.1f}x, below Appendix C's 3.5-6.1x.")
    agree = "agrees" if lowest[P] == PAPER_T1["mobilenetv2"]["n"] else "differs"
    diffs.append(f"Figure 8(a): lowest peak at n = {', '.join(f'{lowest[pp]} (p={pp})' for pp in lowest)}; "
                 f"{agree} with the paper's n = 5 at p = {P}.")
    return diffs


def run() -> tuple[str, dict]:
    """Compute every table; return the printed text and the JSON rows."""
    warnings.simplefilter("ignore", RuntimeWarning)  # random-weight scales overflow in deep nets; no effect here
    st = Study()
    t1_text, t1 = table1(st)
    f5_text, f5 = figure5(st)
    f8_text, f8a, f8b, lowest = figure8(st)
    diffs = differences(st, t1, f5, lowest)
    text = "\n\n".join([t1_text, f5_text, f8_text, "Differences from the paper\n" + "\n".join(f"- {d}" for d in diffs)])
    return text, {"table1": t1, "figure5": f5, "figure8a": f8a, "figure8b": f8b, "differences": diffs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="FILE", help="also write every row (and the differences) to FILE")
    args = ap.parse_args(argv)
    text, data = run()
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
