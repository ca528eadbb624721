"""MetaCLIP balancing with draws that depend only on (seed, uid, query_id).

With `matched[q]` counted over the whole pool and cap `t`, a candidate is kept when for
any of its queries q an independent draw u(seed, uid, q) < t / max(matched[q], t). The
draw hashes the first 64 bits of the uid with the query id and the seed (SplitMix64
finaliser), so the selection is the same whatever the partitioning, worker count or
order. A query matched by m > t candidates keeps about t of them; a rarer query keeps all.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from wit.formats.queries import EntrySpace

_NIBBLE = np.full(256, 255, dtype=np.uint8)  # hex digit -> value, 255 for anything else
for _value, _char in enumerate(b"0123456789abcdef"):
    _NIBBLE[_char] = _value
for _value, _char in enumerate(b"ABCDEF", start=10):
    _NIBBLE[_char] = _value
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 with good avalanche."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def uid_keys(uids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The first 16 hex digits of each uid as uint64, read straight from Arrow's buffers."""
    array = uids.combine_chunks() if isinstance(uids, pa.ChunkedArray) else uids
    if array.null_count:
        raise ValueError("uids must not be null")
    n = len(array)
    width = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], width)[array.offset : array.offset + n + 1].astype(np.int64)
    if n == 0:
        return np.zeros(0, np.uint64)
    lengths = np.diff(offsets)
    if lengths.min() < 16:
        raise ValueError("uids must be strings of at least 16 hex digits")
    data = np.frombuffer(array.buffers()[2], np.uint8)
    if lengths.min() == lengths.max():  # fixed width (wit's uids): a strided view, no gather
        chars = data[offsets[0] : offsets[-1]].reshape(n, lengths[0])[:, :16]
    else:
        chars = data[offsets[:-1, None] + np.arange(16)]
    nibbles = _NIBBLE[chars]
    if nibbles.max() > 15:
        raise ValueError("uids must be hexadecimal")
    packed = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]  # 8 bytes per uid, most significant first
    return packed.view(">u8").ravel().astype(np.uint64)


def draws(keys: np.ndarray, query_ids: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) draws, one per (key, query id) pair, fixed by the seed."""
    with np.errstate(over="ignore"):
        salt = _mix(query_ids.astype(np.uint64) + np.uint64(seed) * _GOLDEN)
    return (_mix(keys ^ salt) >> np.uint64(11)).astype(np.float64) * 2.0**-53


TEXT_DRAW = 1 << 40   # the salt of the draws that pick a text (above every query id)


def pick(keys: np.ndarray, counts: np.ndarray, seed: int, round: int = 0) -> np.ndarray:
    """An index in [0, count) per key, fixed by (seed, key, round): which of an image's
    texts is drawn (round 0 at crawl time; the trainer's `per_epoch` uses one per epoch)."""
    u = draws(keys, np.full(len(keys), TEXT_DRAW + round, dtype=np.int64), seed)
    return np.minimum((u * counts).astype(np.int64), np.maximum(counts - 1, 0))


def balanced(uids: pa.Array | pa.ChunkedArray, query_ids: pa.Array | pa.ChunkedArray,
             probabilities: np.ndarray, seed: int, langs: pa.Array | pa.ChunkedArray | None = None,
             space: EntrySpace | None = None) -> np.ndarray:
    """Boolean mask of the candidates kept: any of a row's entries e draws u(seed, uid, e)
    < probabilities[e] (the dense id e of each (lang, index) when `space` is worldwide)."""
    space = space or EntrySpace.single(len(probabilities))
    flat, parents = space.dense(query_ids, langs)
    keys = uid_keys(uids)
    keep = np.zeros(len(query_ids), dtype=bool)
    certain = probabilities[flat] >= 1   # every draw is below 1: no need to draw
    keep[parents[certain]] = True
    drawn = np.flatnonzero(~certain & ~keep[parents])   # the other pairs of rows not kept yet
    hit = draws(keys[parents[drawn]], flat[drawn], seed) < probabilities[flat[drawn]]
    keep[parents[drawn[hit]]] = True
    return keep


# Per-language thresholds (MetaCLIP 2): English keeps its t; every other language gets the
# t at which the share of its matched counts in the tail (entries below t) is nearest to
# English's share below t_en, so every language is flattened as much as English.


def tail_share(counts: np.ndarray, t: float) -> float:
    """The share of all matches that fall on entries matched fewer than t times (MetaCLIP 2's
    `t_to_p`)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return float(counts[counts < t].sum() / total) if total else 0.0


def threshold_for_share(counts: np.ndarray, share: float) -> float:
    """The count t at which the cumulative share of the sorted counts is nearest `share`
    (MetaCLIP 2's `p_to_t`; the first such count on a tie)."""
    ordered = np.sort(np.asarray(counts, dtype=np.float64))
    total = ordered.sum()
    if not total:
        return 0.0
    return float(ordered[np.abs(np.cumsum(ordered) / total - share).argmin()])


def language_thresholds(counts: dict[str, np.ndarray], t_en: float, english: str = "en") -> dict[str, float]:
    """Each language's t from its per-entry matched counts: `t_en` for English, and for the
    others the t of English's tail share at t_en. Without English matches there is no share
    to carry over, and every language gets t_en."""
    if english not in counts or not np.asarray(counts[english]).sum():
        return {lang: float(t_en) for lang in counts}
    share = tail_share(counts[english], t_en)
    return {lang: float(t_en) if lang == english else threshold_for_share(c, share) for lang, c in counts.items()}


def entry_probabilities(counts: np.ndarray, t: float) -> np.ndarray:
    """min(1, t / count) per entry (MetaCLIP 2's `count_to_prob`); 1 for an entry never matched."""
    counts = np.asarray(counts, dtype=np.float64)
    return t / np.maximum(counts, t) if t > 0 else (counts == 0).astype(np.float64)


def space_thresholds(matched: np.ndarray, space: EntrySpace, t_en: float) -> dict[str, float]:
    """Each language's t from the dense counts (`language_thresholds`); {} for a single list."""
    if not space.worldwide:
        return {}
    return language_thresholds({lang: matched[where] for lang, where in space.slices().items()}, t_en)


def space_probabilities(matched: np.ndarray, space: EntrySpace, t: float,
                        thresholds: dict[str, float] | None = None) -> np.ndarray:
    """Every entry's keep probability: min(1, t / count) for a single list; with each
    language's own t (`space_thresholds`, computed here when not given) for a worldwide one."""
    if not space.worldwide:
        return entry_probabilities(matched, t)
    thresholds = space_thresholds(matched, space, t) if thresholds is None else thresholds
    probabilities = np.ones(space.size, dtype=np.float64)
    for lang, where in space.slices().items():
        probabilities[where] = entry_probabilities(matched[where], thresholds[lang])
    return probabilities
