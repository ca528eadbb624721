import numpy as np
import pyarrow as pa

from tests.support import metaclip2
from wit.formats.balance import balanced, draws, entry_probabilities, language_thresholds, uid_keys
from wit.formats.uids import url_uid


def pool(n, queries, seed=0):
    rng = np.random.default_rng(seed)
    uids = pa.array([url_uid(f"http://example.com/{i}.jpg") for i in range(n)])
    # query 0 is a head query (on ~every candidate), the rest a long tail
    lists = [[0] + sorted(set(rng.integers(1, queries, size=rng.integers(0, 3)).tolist())) for _ in range(n)]
    lists = [l if rng.random() < 0.9 else l[1:] or [1] for l in lists]
    return uids, pa.array(lists, pa.list_(pa.int32())), lists


def test_uid_keys_are_the_first_16_hex_digits():
    uids = pa.array(["0123456789abcdefXXXX", "FFFFFFFFFFFFFFFF"])
    assert uid_keys(uids).tolist() == [0x0123456789ABCDEF, 0xFFFFFFFFFFFFFFFF]
    assert uid_keys(pa.chunked_array([uids[1:]])).tolist() == [0xFFFFFFFFFFFFFFFF]


def test_draws_are_uniform_and_depend_on_seed_uid_query():
    keys = uid_keys(pa.array([url_uid(str(i)) for i in range(20000)]))
    u = draws(keys, np.zeros(len(keys), np.int64), seed=0)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 1800
    assert not np.array_equal(u, draws(keys, np.ones(len(keys), np.int64), seed=0))
    assert not np.array_equal(u, draws(keys, np.zeros(len(keys), np.int64), seed=1))
    assert np.array_equal(u, draws(keys, np.zeros(len(keys), np.int64), seed=0))


def test_same_selection_whatever_the_partitioning_and_order():
    uids, query_ids, lists = pool(30000, 50)
    matched = np.bincount(np.concatenate(lists), minlength=50)
    whole = balanced(uids, query_ids, entry_probabilities(matched, 500), seed=3)
    for size, upto in ((1, 3000), (7, None), (1000, None), (29999, None)):
        end = upto or len(uids)
        parts = [balanced(uids[i:i + size], query_ids[i:i + size], entry_probabilities(matched, 500), 3)
                 for i in range(0, end, size)]
        assert np.array_equal(np.concatenate(parts), whole[:end])
    order = np.random.default_rng(1).permutation(len(uids))
    shuffled = balanced(uids.take(order), query_ids.take(order), entry_probabilities(matched, 500), 3)
    assert np.array_equal(shuffled, whole[order])


def test_kept_counts_per_query_within_statistical_bounds():
    """Every candidate matches head query 0 (m = 60,000); 10% also match one of 99 tail
    queries (about 60 each, under the cap). Tail queries keep all their candidates; the
    head query keeps those plus Binomial(m - T, t / m) of the rest."""
    n, cap = 60000, 2000
    rng = np.random.default_rng(0)
    tails = rng.integers(1, 100, size=n)
    lists = [[0, int(t)] if rng.random() < 0.1 else [0] for t in tails]
    uids = pa.array([url_uid(f"http://example.com/{i}.jpg") for i in range(n)])
    matched = np.bincount(np.concatenate(lists), minlength=100)
    keep = balanced(uids, pa.array(lists, pa.list_(pa.int32())), entry_probabilities(matched, cap), seed=0)
    kept = np.bincount(np.concatenate([l for l, k in zip(lists, keep) if k]), minlength=100)

    with_tail = sum(len(l) == 2 for l in lists)
    p = cap / n
    expected = with_tail + (n - with_tail) * p
    assert abs(kept[0] - expected) < 4 * np.sqrt((n - with_tail) * p * (1 - p))
    tail = np.arange(1, 100)
    assert (matched[tail] <= cap).all() and np.array_equal(kept[tail], matched[tail])

    only_head = np.array([len(l) == 1 for l in lists])
    kept_only_head = keep[only_head].sum()  # candidates the head query alone decides
    assert abs(kept_only_head - only_head.sum() * p) < 4 * np.sqrt(only_head.sum() * p * (1 - p))


def test_language_thresholds_equal_metaclip2s_t_to_p_and_p_to_t():
    rng = np.random.default_rng(3)
    counts = {lang: np.concatenate([np.zeros(50), rng.zipf(a, size=n).astype(np.float64)])
              for lang, a, n in (("en", 1.3, 20000), ("ja", 1.5, 3000), ("zh", 1.2, 8000), ("th", 1.8, 500))}
    for t_en in (20.0, 170.0, 1000.0):
        thresholds = language_thresholds(counts, t_en)
        share = metaclip2.t_to_p(counts["en"], t_en)
        assert thresholds["en"] == t_en
        for lang in ("ja", "zh", "th"):
            assert thresholds[lang] == metaclip2.p_to_t(counts[lang], share)
            np.testing.assert_array_equal(entry_probabilities(counts[lang][50:], thresholds[lang]),
                                          metaclip2.count_to_prob(counts[lang][50:], thresholds[lang]))
    assert language_thresholds({"de": counts["ja"]}, 170.0) == {"de": 170.0}   # no English: t_en for all
