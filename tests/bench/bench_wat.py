"""Benchmark: reading Common Crawl WAT files, `wit crawl`'s reader against cc2dataset's.

The WAT file is built from real pages: every article of the real English Wikipedia
excerpt becomes an HTML page whose images carry sentences of the article as alt texts
(relative and absolute urls, a `<base>` on some pages, other links around them), copied
under many hosts to reach `--records` records. The baseline is cc2dataset's
`extract_documents_from_wat` (FastWARC + simdjson, from the cc2dataset wheel); wit is
`wit.crawl.wat.image_links` (FastWARC + orjson, the truncation check included). Both
read the same file in one process, best of 3; the (url, alt) sets must be identical.
Figures are records per second on one core; target >= 1.5x.

    python tests/bench/bench_wat.py [--records 20000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.realtext import real_pages  # noqa: E402
from wit.crawl.wat import WatCounts, image_links  # noqa: E402
from wit.demo.wat import WatImage, WatPage, html_envelope, write_wat  # noqa: E402

TARGET = 1.5


def build_wat(path: Path, records: int) -> int:
    """A WAT file of `records` page records; the number of image links with alt text."""
    pages = real_pages()
    alts = 0

    def envelopes():
        nonlocal alts
        for n in range(records):
            title, sentences = pages[n % len(pages)]
            host = f"site{n // len(pages)}.example"
            slug = title.replace(" ", "_")
            images = [WatImage(f"/images/{slug}/{i}.jpg" if i % 3 else f"https://cdn.{host}/{slug}/{i}.png",
                               alt=sentences[i % len(sentences)] if i % 4 else None,
                               title=title if i % 5 == 0 else None)
                      for i in range(min(24, 2 * len(sentences)))]
            alts += sum(image.alt is not None for image in images)
            others = [("A@/href", f"/wiki/{slug}_{i}") for i in range(30)] + [("LINK@/href", "/style.css")]
            page = WatPage(f"http://{host}/wiki/{slug}", images, base=f"http://{host}/" if n % 7 == 0 else None,
                           other_links=others)
            yield page.url, html_envelope(page, title)

    write_wat(path, envelopes(), "bench WAT from the real Wikipedia excerpt")
    return alts


def wit_links(path: Path) -> list[tuple[str, str]]:
    with open(path, "rb") as f:
        return [(url, text) for url, text, _, _ in image_links(f, ("alt",), WatCounts())]


def cc2dataset_links(path: Path) -> list[tuple[str, str]]:
    from cc2dataset.main import extract_documents_from_wat

    with open(path, "rb") as f:
        return [(link["url"], link["alt"]) for link in extract_documents_from_wat(f, "image")]


def best_of(runs: int, fn, *args) -> tuple[float, list]:
    best, result = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.warc.wat.gz"
        alts = build_wat(path, args.records)
        cc2dataset_links(path)   # warm-up: imports
        base_seconds, theirs = best_of(3, cc2dataset_links, path)
        our_seconds, ours = best_of(3, wit_links, path)
        size_mb = path.stat().st_size / 1e6
    identical = sorted(ours) == sorted(theirs)
    if not identical or len(ours) != alts:
        sys.exit(f"outputs differ: wit {len(ours):,} links, cc2dataset {len(theirs):,}, expected {alts:,}")
    base_rate, our_rate = args.records / base_seconds, args.records / our_seconds
    ratio = our_rate / base_rate
    print(f"{args.records:,} WAT records ({size_mb:.1f} MB gzip), {alts:,} images with alt text")
    print(f"cc2dataset extract_documents_from_wat : {base_rate:10,.0f} records/s/core")
    print(f"wit WAT reader                        : {our_rate:10,.0f} records/s/core")
    print(f"ratio {ratio:.2f}x (target >= {TARGET}x), identical (url, alt) sets: {identical}")
    print(json.dumps({"bench": "wat", "metric": "records/s/core", "records": args.records, "images": alts,
                      "baseline": round(base_rate, 1), "wit": round(our_rate, 1), "ratio": round(ratio, 3),
                      "identical": identical, "target": TARGET, "met": ratio >= TARGET}))


if __name__ == "__main__":
    main()
