"""The paper's Figure 1: per-block peak activation memory as bars, with the SRAM budget."""

from __future__ import annotations

import io

#: the budget line is drawn when the tallest bar reaches this share of it; below, it would only
#: squash the bars to the bottom of the chart, and the title says "all under the budget" instead
BUDGET_LINE_FROM = 0.25
_PER_LAYER, _OVER, _PATCH = "#5b8def", "#d9534f", "#f0ad4e"


def plot_blocks(report, budget_bytes: int = 256 * 1024, patched: list[int] | None = None) -> bytes:
    """PNG bytes of per-block peak memory (kB). ``patched``: per-block bars under patch-based
    inference (``report.patch``'s setting), drawn beside the per-layer ones when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    idx = [b.index for b in report.blocks]
    kb = [b.peak_bytes / 1024 for b in report.blocks]
    budget_kb = budget_bytes / 1024
    fig, ax = plt.subplots(figsize=(max(6, 0.42 * len(idx) + 2), 3.8), dpi=120)
    w = 0.4 if patched else 0.8
    over = [v > budget_kb for v in kb]
    ax.bar([i - (w / 2 if patched else 0) for i in idx], kb, width=w, color=[_OVER if o else _PER_LAYER for o in over])
    handles = [Patch(color=_PER_LAYER, label="per layer")]
    if any(over):
        handles.append(Patch(color=_OVER, label=f"per layer, over {budget_kb:.0f} kB"))
    if patched:
        ax.bar([i + w / 2 for i in idx], [p / 1024 for p in patched], width=w, color=_PATCH)
        handles.append(Patch(color=_PATCH, label="per patch"))
    tallest = max([*kb, *(p / 1024 for p in patched or [])], default=0)
    top = tallest
    if tallest >= BUDGET_LINE_FROM * budget_kb:
        ax.axhline(budget_kb, color="k", ls="--", lw=1)
        handles.append(plt.Line2D([], [], color="k", ls="--", lw=1, label=f"SRAM budget {budget_kb:.0f} kB"))
        top = max(top, budget_kb)
    ax.set_ylim(0, top * 1.3)  # headroom: the legend sits above the bars and the line
    ax.legend(handles=handles, frameon=False, fontsize=8, loc="upper right", ncol=2)
    ax.set_xticks(idx)
    ax.set_xlabel("block index (0 = stem conv)")
    ax.set_ylabel("peak activation memory (kB, int8)")
    ax.set_title(_title(report, budget_kb, tallest), fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _title(report, budget_kb: float, tallest_kb: float) -> str:
    """The model, its per-layer peak and, patched, the setting and the patched peak."""
    head = f"{report.model}: per-layer peak {_kb(report.peak_bytes)} (block {report.peak_block})"
    p = report.patch
    if p and p.get("patches", 1) > 1:
        head += (f"\n{p['patches']}x{p['patches']} patches over blocks 0..{p['split'] - 1}: peak "
                 f"{_kb(p['peak_bytes'])}, MACs +{100 * p['mac_overhead']:.1f}%")
    if tallest_kb < BUDGET_LINE_FROM * budget_kb:
        head += f"\nall under the {budget_kb:.0f} kB budget"
    return head


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} kB" if n < 10 * 1024 else f"{n / 1024:.0f} kB"
