"""Run every benchmark in tests/bench/ (each runs the toolkit and its baseline side by side)
and write tests/bench/results.json, then from it tests/bench/results.md and the table in
README.md between the bench markers: each ratio against its baseline and target, and each
benchmark's other figures. With `--only`, the named benchmarks run and replace their
rows; the other rows stay.

    python tests/bench/run_all.py [--only NAME ...]

`render_table(rows)` is the one rendering of results.json, for results.md and README.md
alike (tests/test_readme.py checks that the README's block is exactly that rendering).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = HERE / "results.json"
README = REPO / "README.md"
README_BEGIN = "<!-- bench:begin (written by make bench from tests/bench/results.json; do not edit by hand) -->"
README_END = "<!-- bench:end -->"
sys.path.insert(0, str(REPO))

from tests.bench import bench_env  # noqa: E402

BASELINES = {
    "build_queries": "mwxml + mwparserfromhell `strip_code()` + `str.split()`",
    "match": "MetaCLIP's per-text pyahocorasick loop",
    "wat": "cc2dataset's `extract_documents_from_wat` (FastWARC + simdjson)",
    "lid": "py3langid's `classify` (the fastest other offline identifier on PyPI)",
    "scale": "none (MetaCLIP has no pool-scale grouping)",
    "balance": "MetaCLIP's per-candidate `random()` loop",
    "download": "bare `img2dataset.download`",
    "shard": "`shutil.copyfile` of the same tars",
    "embed": "OpenCLIP's embedding loop as clip_benchmark runs it (webdataset + `preprocess`, `--amp` for bf16)",
    "filter": "faiss `IndexBinaryFlat` (brute force) range search; imagehash's `phash` for hashing",
    "semdedup": "faiss k-means, then SemDeDup's reference step (each cluster's whole similarity matrix)",
    "view": "answering the same page by scanning the shards (as `wit inspect --show` reads them)",
    "faces": "OpenCV's tutorial face detector (`haarcascade_frontalface_default`, its documented settings)",
    "train_data": "OpenCLIP's `get_wds_dataset` pipeline",
    "train": "`python -m open_clip_train.main`",
    "train_siglip": "`python -m open_clip_train.main --siglip`",
    "train_patch_dropout": "`python -m open_clip_train.main --force-patch-dropout 0.5`",
    "train_lock_image": "`python -m open_clip_train.main --pretrained FILE --lock-image`",
    "train_gpu": "`python -m open_clip_train.main` (bf16, one GPU)",
    "train_gpu_siglip": "`python -m open_clip_train.main --siglip` (bf16, one GPU)",
    "train_gpu_patch_dropout": "`python -m open_clip_train.main --force-patch-dropout 0.5` (bf16, one GPU)",
    "fsdp_gpu": "none (a smoke run of `parallel: fsdp`)",
    "ddp_gpu": "none (the same smoke run with `parallel: ddp`)",
    "embed_gpu": "OpenCLIP's embedding loop as clip_benchmark runs it, on the GPU",
}
# the fields of a result that the table shows; every other field is listed under it
TABLE_FIELDS = {"bench", "metric", "baseline", "wit", "ratio", "target", "target_text", "met", "mfu", "mfu_target",
                "script", "seconds", "skipped", "failed"}
# how the other fields read ({} the value, {metric} the benchmark's metric); a field not
# named here reads `name: value`
DETAILS = {
    "candidates": "{} candidates",
    "kept": "{} kept by wit",
    "baseline_kept": "{} by the baseline",
    "wit_all_cores_per_core": "wit on all cores: {} {metric}",
    "cores": "{} cores",
    "peak_rss_mb": "peak memory in MB: {}",
    "residue": "{} queries with markup residue",
    "projected_minutes_64_cores": "projected counting time for the full English Wikipedia on 64 cores: {} min",
    "images": "{} images",
    "whole_command_ratio": "whole command: {} of the baseline",
    "whole_command_target": "whole-command target: ≥ {}",
    "whole_command_records": "whole command on {} WAT records of pages with real-looking links",
    "whole_command_candidates": "{} matched candidates",
    "texts": "{} texts",
    "records": "{} WAT records",
    "worst_ratio": "worst mix: {}x",
    "rows_per_s_per_process": "{} rows/s per process",
    "peak_growth": "peak RSS growth: {}x",
    "mix_ratios": "ratio by mix: {}",
    "queries": "{} queries",
    "identical": "output identical to the baseline: {}",
    "match_only_peak_rss_mb": "`wit crawl --match-only` peak memory in MB by pool rows: {}",
    "peak_rss_mb_self": "benchmark process peak memory: {} MB",
    "wit_one_worker": "wit on one worker: {} {metric}",
    "gpu": "GPU: {}",
    "robots_off_ratio": "with robots.txt off: {} of the baseline",
    "hosts": "pool spread over {} hosts",
    "fp32_ratio": "in fp32: {} of the baseline",
    "wit_fp32": "wit in fp32: {} {metric}",
    "baseline_fp32": "baseline in fp32: {} {metric}",
    "hashes": "{} hashes",
    "hashing_ratio": "pHash hashing: {} of imagehash's",
    "hashing_wit": "wit pHash: {} images/s/core",
    "hashing_baseline": "imagehash pHash: {} images/s/core",
    "exact": "same pairs as brute force: {}",
    "search_mb_per_million": "search memory: {} MB per million hashes",
    "speedup_vs_unmasked": "samples/s against our own unmasked (R = 0) run: {}",
    "processes": "{} processes",
    "peak_memory_mb": "peak GPU memory: {} MB",
    "vectors": "{} vectors",
    "clusters": "{} clusters",
    "largest_cluster": "largest cluster: {} vectors",
    "kmeans_seconds": "k-means and assignment (both sides): {} s",
    "removed": "{} removed",
    "working_mb": "wit's working memory: {} MB",
    "baseline_working_mb": "the baseline's working memory: {} MB",
    "samples": "{} samples",
    "index_build_s": "index build: {} s",
    "index_samples_per_s": "index build: {} samples/s",
    "index_mb": "index: {} MB",
    "caches_s": "filter and vector caches: {} s",
    "pages": "pages: {}",
    "recall": "wit's recall on real face photos: {}",
    "fpr": "wit's false-positive rate on real photos with no face: {}",
    "baseline_recall": "the baseline's recall: {}",
    "baseline_fpr": "the baseline's false-positive rate: {}",
    "recall_by_set": "recall by set: {}",
    "fpr_by_set": "false-positive rate by set: {}",
    "blur_faces_images_per_s": "whole blur_faces (detect, blur, re-encode): {} images/s/core",
    "megapixels": "photos of {} MP",
    "cpu": "{} cores",
}
RATIO_FIELDS = {"whole_command_ratio", "whole_command_target", "robots_off_ratio", "fp32_ratio", "hashing_ratio",
                "speedup_vs_unmasked"}
KEY_NAMES = {"wit_1": "wit on one worker", "wit_all": "wit on all cores"}   # keys inside a field


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=None, help="benchmark names, e.g. train match")
    parser.add_argument("--merge", metavar="JSONL", help="merge the result lines of a file (e.g. what "
                        "tests/bench/gpu_check.sh wrote on a GPU machine) into results.json; run nothing")
    args = parser.parse_args()
    if args.merge:
        merge(Path(args.merge))
        return
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.only]
    env = bench_env()
    rows = []
    for script in scripts:
        print(f"== {script.name}", file=sys.stderr, flush=True)
        started = time.time()
        done = subprocess.run([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
        print(done.stdout, end="", flush=True)
        results = _json_lines(done.stdout)
        if done.returncode or not results:
            why = f"exit status {done.returncode}" if done.returncode else "no JSON line"
            rows.append({"bench": script.stem.removeprefix("bench_"), "script": script.name, "failed": why})
            continue
        rows += [{**result, "script": script.name, "seconds": round(time.time() - started)} for result in results]
    if RESULTS.exists():
        rows = keep_measured(json.loads(RESULTS.read_text()), rows, {s.name for s in scripts})
    RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
    write_results(rows)
    update_readme(README, rows)
    failed = [r for r in rows if r.get("failed")]
    print(f"wrote {RESULTS}, {HERE / 'results.md'} and the table in {README} "
          f"({len(rows)} benchmarks, {len(failed)} failed)", file=sys.stderr)
    sys.exit(1 if failed else 0)


def _json_lines(stdout: str) -> list[dict]:
    """The result lines a benchmark printed (JSON objects with a `bench` name), in order."""
    found = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [r for r in found if isinstance(r, dict) and "bench" in r]


def keep_measured(old: list[dict], new: list[dict], ran: set[str]) -> list[dict]:
    """The new rows, with the old rows of benchmarks that did not run now (other scripts,
    a GPU run's merged lines), and an old measured row where the new one only says it was
    skipped (a CPU machine never erases a GPU figure); sorted by script and name."""
    measured = {r["bench"]: r for r in old if not r.get("skipped") and not r.get("failed")}
    rows = [measured.get(r["bench"], r) if r.get("skipped") else r for r in new]
    names = {r["bench"] for r in rows}
    rows += [r for r in old if r["script"] not in ran and r["bench"] not in names]
    return sorted(rows, key=lambda r: (r["script"], r["bench"]))


def merge(path: Path) -> None:
    """Replace the rows of results.json that have the `bench` name of a line of `path`
    (a JSON line per result, with its `script`), add the new ones, and rewrite the tables."""
    new = [{"script": "gpu_check.sh", **r} for r in _json_lines(path.read_text())]
    if not new:
        raise SystemExit(f"{path}: no result lines")
    names = {r["bench"] for r in new}
    rows = [r for r in json.loads(RESULTS.read_text()) if r["bench"] not in names] if RESULTS.exists() else []
    rows = sorted(rows + new, key=lambda r: (r["script"], r["bench"]))
    RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
    write_results(rows)
    update_readme(README, rows)
    print(f"merged {len(new)} results of {path} into {RESULTS} and the README's table", file=sys.stderr)


def render_table(rows: list[dict]) -> str:
    """The results as Markdown: one table row per benchmark (ratio against its baseline and
    target), then each benchmark's other figures. The one rendering of results.json."""
    lines = [
        "| benchmark | metric | baseline | baseline rate | wit | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        script, baseline = f"`{r['script']}`", BASELINES.get(r.get("bench"), "")
        if r.get("failed"):
            lines.append(f"| {script} | {r.get('metric', '')} | {baseline} | | | failed to run: {r['failed']} | | |")
            continue
        if r.get("skipped"):
            lines.append(f"| {script} | {r['metric']} | {baseline} | | | not run: {r['skipped']} | | |")
            continue
        target = f"≥ {r['target']}x" if r.get("target") is not None else r.get("target_text", "—")
        if r.get("mfu") is not None:
            target += f"; MFU {r['mfu']:.0%} (≥ {r['mfu_target']:.0%})"
        met = {True: "yes", False: "**no**", None: "—"}[r.get("met")]
        ratio = "—" if r.get("ratio") is None else f"**{r['ratio']:.2f}x**"
        lines.append(f"| {script} | {r['metric']} | {baseline} | {_number(r.get('baseline') or '')} | "
                     f"{_number(r['wit'])} | {ratio} | {target} | {met} |")
    details = [f"- {'`' + r['script'] + '`'}: " + "; ".join(d) for r in rows
               if not r.get("failed") and not r.get("skipped") and (d := _details(r))]
    return "\n".join(lines + ([""] + details if details else []))


def _details(row: dict) -> list[str]:
    return [DETAILS.get(key, key + ": {}").replace("{metric}", str(row.get("metric", "")))
            .replace("{}", _ratio(value) if key in RATIO_FIELDS else _value(value))
            for key, value in row.items() if key not in TABLE_FIELDS and value is not None]


def _ratio(value: float) -> str:
    return f"{value:.2f}x"


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{_number(int(k))} → {_value(v)}" if str(k).isdigit()
                         else f"{KEY_NAMES.get(k, k)} {_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value)
    return _number(value)


def write_results(rows: list[dict]) -> None:
    header = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores "
        f"({platform.machine()}, Python {platform.python_version()}). Each benchmark runs the toolkit and its "
        "baseline side by side in one run; the ratio is the figure, absolute rates are this machine's.",
        "",
    ]
    (HERE / "results.md").write_text("\n".join(header) + "\n" + render_table(rows) + "\n")


def update_readme(readme_path: str | Path, rows: list[dict]) -> None:
    """Replace what lies between the bench markers of the README (each alone on a line,
    once) with `render_table(rows)`; the rest of the file is left as it is."""
    path = Path(readme_path)
    lines = path.read_text(encoding="utf-8").split("\n")
    begins = [i for i, line in enumerate(lines) if line.strip() == README_BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == README_END]
    if len(begins) != 1 or len(ends) != 1 or begins[0] > ends[0]:
        raise SystemExit(f"{path}: needs the lines {README_BEGIN!r} and {README_END!r}, once each, in that order")
    begin, end = begins[0], ends[0]
    text = "\n".join(lines[:begin + 1] + ["", render_table(rows), ""] + lines[end:])
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                     delete=False) as tmp:
        try:
            tmp.write(text)
            tmp.flush()
            os.chmod(tmp.name, path.stat().st_mode & 0o777)
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, path)


if __name__ == "__main__":
    main()
