"""The data card: how the samples spread over the query list, before and after the cap."""

from __future__ import annotations

import numpy as np

from wit.formats.atomic import atomic_path


def datacard(counts: dict[str, np.ndarray], cap: int, report: dict) -> dict:
    """Per-query counts (query_id, downloaded, kept; queries with samples only), the
    head/tail split (head: queries above the cap before balancing) and totals."""
    downloaded, kept = counts["downloaded"], counts["kept"]
    present = np.flatnonzero(downloaded)
    head = downloaded > cap
    return {
        "cap": cap,
        "queries_with_samples": {"downloaded": int((downloaded > 0).sum()), "kept": int((kept > 0).sum())},
        "head": {"queries": int(head.sum()), "pairs_downloaded": int(downloaded[head].sum()),
                 "pairs_kept": int(kept[head].sum())},
        "tail": {"queries": int(((downloaded > 0) & ~head).sum()),
                 "pairs_downloaded": int(downloaded[~head].sum()), "pairs_kept": int(kept[~head].sum())},
        "totals": {k: report[k] for k in ("samples_read", "unique_samples", "final_samples")},
        "per_query": {"query_id": present.tolist(), "downloaded": downloaded[present].tolist(),
                      "kept": kept[present].tolist()},
    }


def plot_distribution(curves: dict[str, np.ndarray], cap: int, path: str) -> None:
    """Log-log plot of per-query counts by rank (MetaCLIP's figure), one curve per
    {label: counts}, e.g. before and after balancing, with the cap."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.13, 0.13, 0.82, 0.78))
    for label, counts in curves.items():
        values = np.sort(counts[counts > 0])[::-1]
        if len(values):
            axes.loglog(np.arange(1, len(values) + 1), values, label=label)
    axes.axhline(cap, color="grey", linestyle="--", linewidth=1, label=f"cap t = {cap:,}")
    axes.set_xlabel("query rank")
    axes.set_ylabel("pairs per query")
    axes.set_title("Pairs per query")
    axes.legend()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})
