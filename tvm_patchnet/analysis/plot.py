"""The paper's Figure 1: per-block peak activation memory as bars, with an SRAM budget line."""

from __future__ import annotations

import io


def plot_blocks(report, budget_bytes: int = 256 * 1024, patched: list[int] | None = None) -> bytes:
    """PNG bytes of per-block peak memory (kB). ``patched``: per-block bars under patch-based
    inference, drawn beside the per-layer ones when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = [b.index for b in report.blocks]
    kb = [b.peak_bytes / 1024 for b in report.blocks]
    fig, ax = plt.subplots(figsize=(max(6, 0.42 * len(idx) + 2), 3.6), dpi=120)
    w = 0.4 if patched else 0.8
    colors = ["#d9534f" if v * 1024 > budget_bytes else "#5b8def" for v in kb]
    ax.bar([i - (w / 2 if patched else 0) for i in idx], kb, width=w, color=colors, label="per-layer")
    if patched:
        ax.bar([i + w / 2 for i in idx], [p / 1024 for p in patched], width=w, color="#f0ad4e", label="per-patch")
        ax.legend(frameon=False)
    ax.axhline(budget_bytes / 1024, color="k", ls="--", lw=1)
    ax.text(idx[-1] + 0.5, budget_bytes / 1024, f" {budget_bytes // 1024} kB", va="bottom", ha="right", fontsize=8)
    ax.set_xticks(idx)
    ax.set_xlabel("block index (0 = stem conv)")
    ax.set_ylabel("peak activation memory (kB, int8)")
    ax.set_title(f"{report.model}: peak {report.peak_bytes / 1024:.0f} kB in block {report.peak_block}")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
