"""The data card: how the samples spread over the query list, before and after the cap."""

from __future__ import annotations

import numpy as np


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
