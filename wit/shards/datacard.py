"""The data card: how the samples spread over the query list, before and after the cap
(and, for a worldwide crawl, over the languages)."""

from __future__ import annotations

import numpy as np

from wit.formats.queries import EntrySpace


def datacard(counts: dict, cap: int, report: dict, space: EntrySpace | None = None) -> dict:
    """Per-query counts (query_id, downloaded, kept; queries with samples only), the
    head/tail split (head: queries above the cap before balancing) and totals; for a
    worldwide crawl each query's `lang` (query_id its index in that language's list) and
    per language its t, samples, queries with samples and head/tail split."""
    downloaded, kept = counts["downloaded"], counts["kept"]
    present = np.flatnonzero(downloaded)
    card = {"cap": cap, **_split(downloaded, kept, np.full(len(downloaded), float(cap))),
            "totals": {k: report[k] for k in ("samples_read", "unique_samples", "final_samples")}}
    if space is None or not space.worldwide:
        card["per_query"] = {"query_id": present.tolist(), "downloaded": downloaded[present].tolist(),
                             "kept": kept[present].tolist()}
        return card
    thresholds = counts["t"]
    caps = np.zeros(space.size)
    for lang, where in space.slices().items():
        caps[where] = thresholds[lang]
    card.update(_split(downloaded, kept, caps))
    samples = counts["samples"]
    card["languages"] = {
        lang: {"t": thresholds[lang],
               "samples": {k: samples[k].get(lang, 0) for k in ("downloaded", "kept")},
               **_split(downloaded[where], kept[where], caps[where])}
        for lang, where in space.slices().items()}
    position, index = space.index(present)
    card["per_query"] = {"lang": [space.languages[p] for p in position], "query_id": index.tolist(),
                         "downloaded": downloaded[present].tolist(), "kept": kept[present].tolist()}
    return card


def _split(downloaded: np.ndarray, kept: np.ndarray, caps: np.ndarray) -> dict:
    head = downloaded > caps
    return {
        "queries_with_samples": {"downloaded": int((downloaded > 0).sum()), "kept": int((kept > 0).sum())},
        "head": {"queries": int(head.sum()), "pairs_downloaded": int(downloaded[head].sum()),
                 "pairs_kept": int(kept[head].sum())},
        "tail": {"queries": int(((downloaded > 0) & ~head).sum()),
                 "pairs_downloaded": int(downloaded[~head].sum()), "pairs_kept": int(kept[~head].sum())},
    }
