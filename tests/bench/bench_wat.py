"""Benchmark: reading Common Crawl WAT files, `wit crawl` against cc2dataset's extraction.

The baseline is cc2dataset's `extract_documents_from_wat` (FastWARC + simdjson, from the
cc2dataset wheel) reading the file in one process. Two measurements:

1. The reader. Every article of the real English Wikipedia excerpt becomes an HTML page
   whose images carry sentences of the article as alt texts (mostly plain urls, a
   `<base>` on some pages, other links around them), copied under many hosts to reach
   `--records` records. wit is `wit.crawl.wat.image_links` (FastWARC + orjson, the
   truncation check included, Arrow batches out); best of 3 each; the (url, alt) sets must
   be identical. Records per second on one core; target >= 1.5x.
2. The whole command, `wit crawl --queries Q --wat W --match-only --processes 1 --out OUT`
   run as a child process (wall time: start-up, url resolution and policy, matching,
   counters, candidate and selected files) against cc2dataset's extraction alone, in this
   process, on `--command-records` records (default 90,000: 30,000 captures of a request,
   a response and a metadata record, with the fields Common Crawl writes: WARC and HTTP
   headers, the head's metas, links and scripts, about 90 other links with anchor texts;
   about 1.6 KB of gzip a record, where a real WAT file has about 2). The image links look
   like those of real pages: query strings (`?w=640&h=480`), scheme-relative `//host/...`,
   relative paths (`img/a.jpg`, `../img/b.png`, `./c.jpg`), fragments, upper-case schemes
   and hosts, percent-escapes, dot segments, `data:` and `javascript:` links (dropped by
   both), a `<base>` (absolute or relative) on one page in seven. Alt texts are real
   sentences or their first words (some with spaces or a newline around them); a quarter
   of the images have none. Q is every word and bigram seen at least 3 times in the
   excerpt (33,074 entries). Best of 3 each, alternating; target >= 0.9x.
   The sets compared: wit's candidates (url, text) against cc2dataset's (url, alt) with
   the alt cleaned as wit and MetaCLIP clean it (newlines to spaces, ends stripped, empty
   dropped), kept where the same matcher (`QueryMatcher` on Q) matches it and the url
   policy allows it. wit resolves every link as urljoin does; cc2dataset keeps an
   absolute `http://`/`https://` link as it is and joins the others, then drops every
   url not starting with a lower-case `http://` or `https://`. On these links the one
   difference is an upper-case scheme on a page of the other scheme (`HTTPS://CDN.X/a`
   on an http page): urljoin keeps it as it is, wit keeps the candidate, cc2dataset drops
   it. Those rows are counted and left out of the comparison.

    python tests/bench/bench_wat.py [--records 20000] [--command-records 90000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path

import orjson
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.realtext import real_pages  # noqa: E402
from wit.crawl.match import QueryMatcher  # noqa: E402
from wit.crawl.urls import refusal  # noqa: E402
from wit.crawl.wat import WatCounts, image_links  # noqa: E402
from wit.demo.wat import WatImage, WatPage, html_envelope, write_wat  # noqa: E402

TARGET = 1.5
COMMAND_TARGET = 0.9


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


def wit_links(path: Path) -> list:
    with open(path, "rb") as f:
        return list(image_links(f, ("alt",), WatCounts()))


def pairs(tables: list) -> list[tuple[str, str]]:
    return [pair for t in tables for pair in zip(t["url"].to_pylist(), t["text"].to_pylist())]


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


# ---- the whole command, on links like those of real pages ----------------------------------

def real_link(n: int, i: int, slug: str, host: str) -> str:
    """The src of image i of page n, in one of the forms found on real pages."""
    forms = [
        f"https://cdn.{host}/{slug}/{i}.jpg?w=640&h=480", f"https://cdn.{host}/{slug}/{i}.jpg",
        f"/images/{slug}/{i}.jpg", f"/thumb.php?f={slug}_{i}.jpg&w=320", f"//img.{host}/{slug}/{i}.png",
        f"//img.{host}/{slug}/{i}.png?v=3", f"img/{slug}_{i}.jpg", f"../img/{slug}_{i}.png", f"./c{i}.jpg",
        f"{slug}_{i}.webp", f"https://cdn.{host}/{slug}/{i}.jpg#main", f"HTTPS://CDN.{host.upper()}/{slug}/{i}.JPG",
        f"http://Static.{host}/{slug}/caf%C3%A9%20{i}.jpg", f"https://cdn.{host}/{slug}/{i}.jpg?w=1280",
        f"/static/{slug}/{i}.jpg?itok=Ab{i}", "data:image/gif;base64,R0lGODlhAQABAIAAAAAAACw=",
        "javascript:void(0)", f"https://{host}/wp-content/uploads/2024/0{i % 9 + 1}/{slug}-{i}-300x200.jpg",
        f"http://{host}/media/{slug}/{i}.gif", f"/{slug}/{i}/../{i}.jpg",
    ]
    return forms[(n * 7 + i) % len(forms)]


def capture(n: int, pages: list) -> list[tuple[str, bytes]]:
    """The request, response and metadata records of capture n, with the fields a Common
    Crawl WAT carries (WARC and HTTP headers, the head's metas, links and scripts, the
    page's other links with their anchor texts)."""
    title, slug, alts, anchors, head = page_parts(n % len(pages), pages)
    host = f"site{n // len(pages)}.example"
    url = f"{'https' if n % 3 else 'http'}://www.{host}/wiki/{slug}/index.html"
    images = [{"path": "IMG@/src", "url": real_link(n, i, slug, host), **({"alt": alt} if alt is not None else {})}
              for i, alt in enumerate(alts)]
    if n % 7 == 0:
        head = {**head, "Base": f"https://static.{host}/assets/" if n % 14 else "/en/"}
    headers = {name: f"{name.lower()}-value-{n % 97}" for name in HEADER_NAMES}
    response = warc_envelope("response", url, n, {
        "Actual-Content-Type": "application/http; msgtype=response",
        "HTTP-Response-Metadata": {
            "Response-Message": {"Version": "HTTP/1.1", "Status": "200", "Reason": "OK"},
            "Headers": {**headers, "Content-Type": "text/html; charset=utf-8"}, "Headers-Length": "612",
            "Entity-Length": str(20_000 + n % 5000), "Entity-Trailing-Slop-Length": "0",
            "Entity-Digest": f"sha1:{digest(url, 'entity')}",
            "HTML-Metadata": {"Head": head, "Links": anchors[:40] + images + anchors[40:]}}})
    request = warc_envelope("request", url, n, {
        "Actual-Content-Type": "application/http; msgtype=request",
        "HTTP-Request-Metadata": {"Request-Message": {"Method": "GET", "Path": url, "Version": "HTTP/1.1"},
                                  "Headers": {"Host": f"www.{host}", "User-Agent": "CCBot/2.0", **headers},
                                  "Headers-Length": "380", "Entity-Length": "0"}})
    metadata = warc_envelope("metadata", url, n, {
        "Actual-Content-Type": "application/warc-fields",
        "WARC-Metadata-Metadata": {"Metadata-Records": [
            {"Name": "fetchTimeMs", "Value": str(100 + n % 900)}, {"Name": "charset-detected", "Value": "UTF-8"},
            {"Name": "languages-cld2", "Value": '{"reliable":true,"languages":[{"code":"en","score":0.99}]}'}]}})
    return [(url, orjson.dumps(record)) for record in (request, response, metadata)]


_PARTS: dict[int, tuple] = {}


def page_parts(k: int, pages: list) -> tuple:
    """(title, slug, alt of each image (None: none), other links, head) of page k: the same
    wherever the page is copied. Alts are real sentences or their first words, some with
    spaces and a newline around them."""
    if k not in _PARTS:
        title, sentences = pages[k]
        alts = []
        for i in range(min(24, 2 * len(sentences))):
            words = sentences[i % len(sentences)].split()
            alt = " ".join(words[:2 + i % 7]) if i % 3 else " ".join(words)
            alts.append(None if i % 4 == 0 else f"  {alt}\n" if i % 11 == 0 else alt)
        slug, words = title.replace(" ", "_"), " ".join(sentences).split()
        anchors = [{"path": "A@/href", "url": f"/wiki/{words[i]}_{i}" if i % 3 else f"https://other{i}.example/{slug}",
                    "text": " ".join(words[i:i + 1 + i % 4])} for i in range(min(90, len(words)))]
        head = {"Title": title, "Metas": [{"name": name, "content": f"{name} of {title}"} for name in META_NAMES],
                "Link": [{"path": "LINK@/href", "url": f"/static/{i}.css", "rel": "stylesheet"} for i in range(4)],
                "Scripts": [{"path": "SCRIPT@/src", "url": f"/static/app{i}.js", "type": "text/javascript"}
                            for i in range(4)]}
        _PARTS[k] = title, slug, alts, anchors, head
    return _PARTS[k]


META_NAMES = ("viewport", "description", "keywords", "author", "og:title", "og:type", "og:image", "twitter:card")
HEADER_NAMES = ("Date", "Server", "Cache-Control", "Expires", "Vary", "X-Frame-Options", "X-Content-Type-Options",
                "Strict-Transport-Security", "Set-Cookie", "Content-Language", "Last-Modified", "ETag")


def digest(*parts: object) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()


def warc_envelope(warc_type: str, url: str, n: int, payload: dict) -> dict:
    """A WAT record as Common Crawl writes them: the container, the WARC headers, the payload."""
    return {"Container": {"Filename": "CC-MAIN-20240301000000-20240301030000-00000.warc.gz", "Compressed": True,
                          "Offset": str(n * 30_000), "Gzip-Metadata": {
                              "Deflate-Length": str(9000 + n % 3000), "Header-Length": "10", "Footer-Length": "8",
                              "Inflated-CRC": str(n * 7919 % 2**31), "Inflated-Length": str(30_000 + n % 7000)}},
            "Envelope": {"Format": "WARC", "WARC-Header-Length": "512", "Actual-Content-Length": str(29_000 + n % 7000),
                         "WARC-Header-Metadata": {
                             "WARC-Type": warc_type, "WARC-Date": "2024-03-01T01:02:03Z",
                             "WARC-Record-ID": f"<urn:uuid:{digest(url, warc_type)[:32]}>",
                             "Content-Length": str(29_000 + n % 7000), "Content-Type": "application/http",
                             "WARC-Warcinfo-ID": "<urn:uuid:6f1c7d4e-2a3b-4c5d-8e9f-0a1b2c3d4e5f>",
                             "WARC-IP-Address": f"93.184.{n % 256}.{n * 7 % 256}", "WARC-Target-URI": url,
                             "WARC-Payload-Digest": f"sha1:{digest(url, 'payload')}",
                             "WARC-Block-Digest": f"sha1:{digest(url, 'block')}"},
                         "Block-Digest": f"sha1:{digest(url, warc_type, 'block')}",
                         "Payload-Metadata": payload}}


def build_real_wat(path: Path, records: int) -> None:
    """`records` WAT records (a third of them responses with links), each a gzip member
    (level 6), as Common Crawl writes them."""
    pages = real_pages()
    with open(path, "wb") as out:
        for n in range(records // 3):
            for k, (url, payload) in enumerate(capture(n, pages)):
                header = (f"WARC/1.0\r\nWARC-Type: metadata\r\nWARC-Target-URI: {url}\r\n"
                          f"WARC-Date: 2024-03-01T01:02:03Z\r\n"
                          f"WARC-Record-ID: <urn:uuid:{uuid.UUID(int=3 * n + k)}>\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
                out.write(zlib.compress(header.encode() + payload + b"\r\n\r\n", 6, wbits=31))


def write_queries(path: Path) -> list[str]:
    """Every word and bigram seen at least 3 times in the excerpt's sentences, one a line."""
    counts: Counter[str] = Counter()
    for _, sentences in real_pages():
        for sentence in sentences:
            words = sentence.split()
            counts.update(words)
            counts.update(f"{a} {b}" for a, b in zip(words, words[1:]))
    queries = [q for q, count in counts.items() if count >= 3]
    path.write_text("\n".join(queries) + "\n", encoding="utf-8")
    return queries


def wit_command(wat: Path, queries: Path, out: Path) -> float:
    """Wall time of the whole `wit crawl --match-only` command, in a fresh process."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "wit", "crawl", "--queries", str(queries), "--wat", str(wat),
                           "--match-only", "--processes", "1", "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"wit crawl failed:\n{done.stderr[-2000:]}")
    return seconds


def comparable(theirs: list[tuple[str, str]], queries: list[str]) -> set[tuple[str, str]]:
    """cc2dataset's (url, alt) as wit would keep them: alt cleaned, matched, url allowed."""
    cleaned = [(url, alt.replace("\n", " ").replace("\r", " ").strip()) for url, alt in theirs]
    cleaned = [(url, alt) for url, alt in cleaned if alt and refusal(url) is None]
    matched = QueryMatcher(queries).match([alt for _, alt in cleaned]).to_pylist()
    return {pair for pair, ids in zip(cleaned, matched) if ids}


def whole_command(records: int, tmp: Path) -> dict:
    wat, queries_file, out = tmp / "real.warc.wat.gz", tmp / "queries.txt", tmp / "crawl"
    build_real_wat(wat, records)
    queries = write_queries(queries_file)
    base_seconds = our_seconds = float("inf")
    for _ in range(3):   # alternating, so that a busy moment of the machine hits both
        seconds, theirs = best_of(1, cc2dataset_links, wat)   # imported and warmed up by the reader's runs
        base_seconds, our_seconds = min(base_seconds, seconds), min(our_seconds, wit_command(wat, queries_file, out))
    candidates = pq.read_table(out / "candidates", columns=["url", "text"])
    ours = set(zip(candidates["url"].to_pylist(), candidates["text"].to_pylist()))
    lower = {(url, text) for url, text in ours if url.startswith(("http://", "https://"))}
    expected = comparable(theirs, queries)
    return {"records": records, "queries": len(queries), "candidates": len(ours), "baseline_seconds": base_seconds,
            "wit_seconds": our_seconds, "identical": lower == expected, "upper_case_scheme_rows": len(ours - lower),
            "size_mb": wat.stat().st_size / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--command-records", type=int, default=90_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.warc.wat.gz"
        alts = build_wat(path, args.records)
        cc2dataset_links(path)   # warm-up: imports
        base_seconds, theirs = best_of(3, cc2dataset_links, path)
        our_seconds, ours = best_of(3, wit_links, path)
        ours = pairs(ours)
        size_mb = path.stat().st_size / 1e6
        command = whole_command(args.command_records, Path(tmp))
    identical = sorted(ours) == sorted(theirs)
    if not identical or len(ours) != alts:
        sys.exit(f"outputs differ: wit {len(ours):,} links, cc2dataset {len(theirs):,}, expected {alts:,}")
    if not command["identical"]:
        sys.exit("whole command: wit's candidates differ from cc2dataset's matched links")
    base_rate, our_rate = args.records / base_seconds, args.records / our_seconds
    ratio = our_rate / base_rate
    command_ratio = command["baseline_seconds"] / command["wit_seconds"]
    print(f"reader: {args.records:,} WAT records ({size_mb:.1f} MB gzip), {alts:,} images with alt text")
    print(f"cc2dataset extract_documents_from_wat : {base_rate:10,.0f} records/s/core")
    print(f"wit WAT reader                        : {our_rate:10,.0f} records/s/core")
    print(f"ratio {ratio:.2f}x (target >= {TARGET}x), identical (url, alt) sets: {identical}")
    print(f"whole command: {command['records']:,} WAT records ({command['size_mb']:.1f} MB gzip), "
          f"{command['queries']:,} queries, {command['candidates']:,} candidates "
          f"({command['upper_case_scheme_rows']:,} with an upper-case scheme, which cc2dataset drops)")
    print(f"cc2dataset extract_documents_from_wat : {command['baseline_seconds']:7.2f} s")
    print(f"wit crawl --wat --match-only (wall)   : {command['wit_seconds']:7.2f} s")
    print(f"ratio {command_ratio:.2f}x (target >= {COMMAND_TARGET}x), same matched (url, text) set: True")
    print(json.dumps({"bench": "wat", "metric": "records/s/core", "records": args.records, "images": alts,
                      "baseline": round(base_rate, 1), "wit": round(our_rate, 1), "ratio": round(ratio, 3),
                      "identical": identical, "target": TARGET,
                      "whole_command_ratio": round(command_ratio, 3), "whole_command_target": COMMAND_TARGET,
                      "whole_command_records": command["records"], "whole_command_candidates": command["candidates"],
                      "met": ratio >= TARGET and command_ratio >= COMMAND_TARGET}))


if __name__ == "__main__":
    main()
