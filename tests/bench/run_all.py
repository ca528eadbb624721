"""Run every benchmark in tests/bench/ (each runs the toolkit and its baseline side by side)
and write tests/bench/results.md: each ratio against its baseline and target. With
`--only`, the named benchmarks run and replace their rows; the other rows stay (the
results are kept in tests/bench/results.json).

    python tests/bench/run_all.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = HERE / "results.json"
BASELINES = {
    "build_queries": "mwxml + mwparserfromhell `strip_code()` + `str.split()`",
    "match": "MetaCLIP's per-text pyahocorasick loop",
    "balance": "MetaCLIP's per-candidate `random()` loop",
    "download": "bare `img2dataset.download`",
    "shard": "`shutil.copyfile` of the same tars",
    "train_data": "OpenCLIP's `get_wds_dataset` pipeline",
    "train": "`python -m open_clip_train.main`",
    "train_gpu": "`python -m open_clip_train.main` (bf16, one GPU)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=None, help="benchmark names, e.g. train match")
    args = parser.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.only]
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1", "TQDM_DISABLE": "1"}
    rows, failed = [], []
    for script in scripts:
        print(f"== {script.name}", file=sys.stderr, flush=True)
        started = time.time()
        done = subprocess.run([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
        print(done.stdout, end="", flush=True)
        result = _last_json(done.stdout)
        if done.returncode or result is None:
            failed.append(script.name)
            continue
        rows.append({**result, "script": script.name, "seconds": round(time.time() - started)})
    if args.only and RESULTS.exists():  # keep the rows of the benchmarks that did not run
        ran = {s.name for s in scripts}
        rows = sorted([r for r in json.loads(RESULTS.read_text()) if r["script"] not in ran] + rows,
                      key=lambda r: r["script"])
    RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
    write_results(rows, failed)
    print(f"wrote {HERE / 'results.md'} ({len(rows)} benchmarks, {len(failed)} failed)", file=sys.stderr)
    sys.exit(1 if failed else 0)


def _last_json(stdout: str) -> dict | None:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def write_results(rows: list[dict], failed: list[str]) -> None:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores "
        f"({platform.machine()}, Python {platform.python_version()}). Each benchmark runs the toolkit and its "
        "baseline side by side in one run; the ratio is the figure, absolute rates are this machine's.",
        "",
        "| benchmark | metric | baseline | baseline rate | wit | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| `{r['script']}` | {r['metric']} | {BASELINES.get(r['bench'], '')} | | | "
                         f"not run: {r['skipped']} | | |")
            continue
        target = f"≥ {r['target']}x" if r.get("target") is not None else "—"
        if r.get("mfu") is not None:
            target += f"; MFU {r['mfu']:.0%} (≥ {r['mfu_target']:.0%})"
        met = {True: "yes", False: "**no**", None: "—"}[r.get("met")]
        lines.append(f"| `{r['script']}` | {r['metric']} | {BASELINES.get(r['bench'], '')} | {r['baseline']:,} | "
                     f"{r['wit']:,} | **{r['ratio']:.2f}x** | {target} | {met} |")
    lines += [f"| `{name}` | failed to run | | | | | | |" for name in failed]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
