"""The main job end to end on the embedded sample, in three languages: from Wikipedia text
to a trained, evaluated multilingual CLIP, offline, every stage run through its real command.

1. Query lists (DEMO/lists): English with `wit build-queries` on the real English
   Wikipedia excerpt of the gensim wheel, with WordNet 3.0 (when installed) and a small
   page-view file for the excerpt's titles (MetaCLIP 1's list); Japanese and Chinese with
   `wit build-queries --lang ja|zh` on small generated dumps (wit.demo.wikis: words
   segmented, MetaCLIP 2's caps). `wit build-queries --merge` makes them one worldwide
   list, DEMO/queries.
2. A demo web (wit.demo.web): HTML pages in English, Japanese and Chinese whose <img> alt
   texts describe procedurally drawn images, served from 127.0.0.1, and the same pages as
   a Common Crawl-style WAT. Some colour-shape classes never appear in it: they exist
   only as words.
3. `wit crawl --wat` (loopback allowed explicitly): each alt text's language identified
   offline, matched against its language's list (MetaCLIP 2's rule), balanced per
   language; `wit shard`.
4. `python -m train.tokenizer` on the shards' texts (a multilingual SentencePiece-style
   unigram vocabulary), then `python -m train` (pipelines/configs/tiny.yaml with that
   tokenizer) with zero-shot classification (prompt ensemble) on held-out images of
   every class, the unseen ones included, and retrieval on held-out shards.
5. `python -m train.evaluate --suite` with pipelines/evals/demo.yaml on the held-out
   images (an ImageFolder with class names and templates in each language) and held-out
   scenes captioned in each language (the WebDataset retrieval layout, KEY.LANG.txt):
   DEMO/eval/suite/results.json and suite.png, per language and their mean.
6. A summary table, DEMO/summary.json, and plots in DEMO/run.

    python pipelines/demo.py [--out demo] [--fast]

A second run reuses the query list when its inputs are unchanged and replaces the rest.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDNET = Path("/usr/share/wordnet")
HELD_OUT = {"purple star", "orange ring", "green diamond", "blue cross"}   # described only in words
TEMPLATES = REPO / "pipelines" / "configs" / "demo_templates.txt"
SUITE = REPO / "pipelines" / "evals" / "demo.yaml"
LANGUAGES = ("en", "ja", "zh")


@dataclass(frozen=True)
class Settings:
    pages: int = 400
    images_per_page: int = 8
    steps: int = 300
    cap: int = 150
    eval_per_class: int = 6
    heldout_samples: int = 400
    vocab_size: int = 1000
    seed: int = 0


FAST = Settings(pages=150, steps=200, eval_per_class=4, heldout_samples=200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "demo")
    parser.add_argument("--fast", action="store_true", help="a smaller web and fewer steps (the test's variant)")
    args = parser.parse_args()
    settings = FAST if args.fast else Settings()
    started = time.time()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    queries = build_queries(out)
    from wit.demo import web, world

    for stale in ("web", "crawl", "shards", "run", "eval"):
        shutil.rmtree(out / stale, ignore_errors=True)
    for stale in ("summary.json", "tokenizer.json"):
        (out / stale).unlink(missing_ok=True)
    _step(f"demo web: {settings.pages} pages x {settings.images_per_page} images in {', '.join(LANGUAGES)}; "
          f"never shown: {sorted(HELD_OUT)}")
    pages = web.build_site(out / "web" / "site", settings.pages, settings.images_per_page, settings.seed,
                           held_out=HELD_OUT, languages=LANGUAGES)
    with web.serve(out / "web" / "site") as base_url:
        wat = web.write_site_wat(pages, base_url, out / "web" / "demo.wat.gz")
        _step(f"wit crawl from {wat.name}, served at {base_url}")
        _run("wit", "crawl", "--queries", queries, "--wat", wat, "--out", out / "crawl",
             "--allow-network", "127.0.0.0/8", "--cap", settings.cap, "--image-size", 64, "--processes", 2, "--threads", 16,
             "--samples-per-shard", 500, "--timeout", 10)
    _step("wit shard")
    _run("wit", "shard", "--crawl", out / "crawl", "--out", out / "shards", "--cap", settings.cap,
         "--samples-per-shard", 250)
    folder = world.write_imagefolder(out / "eval" / "images", settings.eval_per_class, seed=settings.seed + 1)
    world.write_shards(out / "eval" / "shards", settings.heldout_samples, seed=settings.seed + 2,
                       samples_per_shard=settings.heldout_samples)
    _step(f"python -m train.tokenizer: {settings.vocab_size} pieces from the shards' texts")
    _run(sys.executable, "-m", "train.tokenizer", "--shards", out / "shards", "--out", out / "tokenizer.json",
         "--vocab-size", settings.vocab_size)
    _step(f"python -m train: {settings.steps} steps of pipelines/configs/tiny.yaml with that tokenizer")
    _run(sys.executable, "-m", "train", "--config", REPO / "pipelines" / "configs" / "tiny.yaml", "--set",
         f"shards={out / 'shards'}", f"run_dir={out / 'run'}", f"steps={settings.steps}", "resume=restart",
         f"model.tokenizer={out / 'tokenizer.json'}",
         f"warmup={settings.steps // 10}", "save_every=0", "log_every=10", f"eval.imagefolder={folder}",
         f"eval.classnames={folder / 'classnames.txt'}", f"eval.templates={TEMPLATES}",
         f"eval.shards={out / 'eval' / 'shards'}")
    suite = write_suite(out / "eval", folder, settings)
    _step(f"python -m train.evaluate --suite {SUITE.relative_to(REPO)}")
    _run(sys.executable, "-m", "train.evaluate", "--checkpoint", out / "run" / "checkpoints" / "latest.pt",
         "--suite", suite, "--out", out / "eval" / "suite")
    summary = summarise(out, settings, time.time() - started)
    plot(out, settings.cap)
    print_table(summary, out)


def write_suite(eval_dir: Path, folder: Path, settings: Settings) -> Path:
    """DEMO/eval/demo.yaml beside its sets: the held-out ImageFolder (with the demo's
    templates as its own, and class names and templates in Japanese and Chinese:
    classnames_LANG.txt, zeroshot_classification_templates_LANG.txt) and held-out scenes
    captioned in each language as a WebDataset retrieval set."""
    from wit.demo import phrases, world

    shutil.copyfile(TEMPLATES, folder / "zeroshot_classification_templates.txt")
    names = (folder / "classnames.txt").read_text(encoding="utf-8").splitlines()
    for lang in LANGUAGES[1:]:
        (folder / f"classnames_{lang}.txt").write_text(
            "".join(phrases.class_name(name, lang) + "\n" for name in names), encoding="utf-8")
        (folder / f"zeroshot_classification_templates_{lang}.txt").write_text(
            "".join(t + "\n" for t in phrases.TEMPLATES[lang]), encoding="utf-8")
    world.write_shards(eval_dir / "wds_captions" / "test", settings.heldout_samples, seed=settings.seed + 3,
                       samples_per_shard=settings.heldout_samples, languages=LANGUAGES)
    (eval_dir / "wds_captions" / "dataset_type.txt").write_text("retrieval\n")
    shutil.copyfile(SUITE, eval_dir / SUITE.name)
    return eval_dir / SUITE.name


def build_queries(out: Path) -> Path:
    """DEMO/lists/{en,ja,zh} and their worldwide merge, DEMO/queries; `wit build-queries`
    itself does nothing when its inputs are unchanged."""
    from wit.demo.wikis import write_wiki
    from wit.enwiki_excerpt import enwiki_excerpt

    dump = enwiki_excerpt()
    views = write_pageviews(dump, out / "inputs" / "pageviews-demo.gz")
    wordnet = ["--wordnet", str(WORDNET)] if (WORDNET / "data.noun").exists() else []
    _step("wit build-queries on the gensim Wikipedia excerpt" + (" with WordNet 3.0" if wordnet else
                                                                 " (WordNet not installed)"))
    _run("wit", "build-queries", "--wiki-dump", str(dump), "--pageviews", str(views), *wordnet,
         "--out", str(out / "lists" / "en"), "--min-count", "20", "--min-pmi", "10", "--min-views", "70",
         "--overwrite")
    for lang in LANGUAGES[1:]:
        dump, views = write_wiki(lang, out / "inputs")
        _step(f"wit build-queries --lang {lang} on a generated {lang} Wikipedia dump")
        _run("wit", "build-queries", "--lang", lang, "--wiki-dump", dump, "--pageviews", views,
             "--min-pmi", "5", "--out", out / "lists" / lang, "--overwrite")
    _step("wit build-queries --merge: one worldwide list")
    _run("wit", "build-queries", *(a for lang in LANGUAGES for a in ("--merge", f"{lang}={out / 'lists' / lang}")),
         "--out", out / "queries", "--overwrite")
    return out / "queries"


def write_pageviews(dump: Path, path: Path) -> Path:
    """An hourly page-view file for the excerpt's article titles (views drawn from each
    title's hash, so some pass the threshold of 70 and some do not), plus other wikis."""
    import bz2

    titles = re.findall(r"<title>([^<:]+)</title>", bz2.open(dump, "rt", encoding="utf-8").read())
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for title in sorted(set(titles)):
        views = int(hashlib.sha256(title.encode()).hexdigest()[:4], 16) % 150
        lines.append(f"en {title.replace(' ', '_')} {views} 0")
        lines.append(f"de {title.replace(' ', '_')} {views * 3} 0")   # another wiki: not counted
    data = gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)
    if not path.exists() or path.read_bytes() != data:   # unchanged: the query list is reused
        path.write_bytes(data)
    return path


def summarise(out: Path, settings: Settings, seconds: float) -> dict:
    from train.model.text_tokens import FileTokenizer

    stats = json.loads((out / "queries" / "stats.json").read_text())
    english = json.loads((out / "lists" / "en" / "stats.json").read_text())
    crawl = json.loads((out / "crawl" / "crawl.json").read_text())
    card = json.loads((out / "shards" / "datacard.json").read_text())
    model = json.loads((out / "run" / "config.json").read_text())["model"]
    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    lines = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in lines if m["kind"] == "train"]
    final = [m for m in lines if m["kind"] == "eval"][-1]
    counts = crawl["counts"]
    suite = json.loads((out / "eval" / "suite" / "results.json").read_text())
    summary = {
        "queries": stats["queries"],
        "queries_per_source": {k: v["first_listed_by"] for k, v in english["sources"].items()},   # English's
        "languages": {lang: {
            "queries": stats["inputs"][lang]["queries"], "t": crawl["languages"][lang]["t"],
            "texts": crawl["languages"][lang]["texts"], "matched": crawl["languages"][lang]["matched"],
            "selected": crawl["languages"][lang]["selected"], "downloaded": crawl["languages"][lang]["downloaded"],
            "shard_samples": card["languages"][lang]["samples"]["kept"],
            **{name: d["languages"][lang] for name, d in ((d["name"], d) for d in suite["datasets"])},
        } for lang in LANGUAGES},
        "other_language_texts": crawl["languages"]["other"]["texts"],
        "tokenizer": {"file": str(out / "tokenizer.json"), "sha256": model["tokenizer_sha256"],
                      "vocab_size": FileTokenizer(str(out / "tokenizer.json"), 1).vocab_size},
        "candidates": counts["read"], "matched": counts["matched"],
        "selected": counts["selected"], "downloaded": counts["downloaded"],
        "shards": len(manifest["shards"]), "shard_samples": manifest["total_samples"],
        "training_steps": train[-1]["step"], "first_loss": train[0]["loss"], "final_loss": train[-1]["loss"],
        "zero_shot_top1": final["zeroshot_top1"], "zero_shot_top5": final.get("zeroshot_top5"),
        "chance": final["zeroshot_chance"], "zero_shot_classes": final["zeroshot_classes"],
        "unseen_classes": sorted(HELD_OUT),
        "recall_i2t@1": final["i2t_r1"], "recall_i2t@5": final["i2t_r5"],
        "recall_t2i@1": final["t2i_r1"], "recall_t2i@5": final["t2i_r5"],
        "retrieval_chance@1": 1 / final["retrieval_pairs"],
        "suite": {d["name"]: {"metric": d["metric"], "value": d["value"], "chance": d["chance"],
                              "languages": {lang: {"value": v["value"], "chance": v["chance"]}
                                            for lang, v in d.get("languages", {}).items()}}
                  for d in suite["datasets"]},
        "settings": asdict(settings), "seconds": round(seconds, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def plot(out: Path, cap: int) -> None:
    """Loss curve and logit scale from metrics.jsonl; pairs per query before balancing (the
    crawl's match counts), after the crawl's balancing and after the final cap."""
    import numpy as np
    import pyarrow.parquet as pq
    from matplotlib.figure import Figure

    from wit.formats.shardwrite import plot_distribution

    lines = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in lines if m["kind"] == "train"]
    for key, label, name in (("loss", "contrastive loss", "loss.png"), ("logit_scale", "logit scale", "logit_scale.png")):
        fig = Figure(figsize=(5, 3.2))
        ax = fig.add_subplot()
        ax.plot([m["step"] for m in train], [m[key] for m in train])
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        fig.tight_layout()
        fig.savefig(out / "run" / name, dpi=100)
    matched = pq.read_table(out / "crawl" / "entry_counts.parquet").column("matched").to_numpy()
    per_query = json.loads((out / "shards" / "datacard.json").read_text())["per_query"]
    plot_distribution({"matched (before balancing)": matched,
                       "downloaded (balanced at crawl time)": np.array(per_query["downloaded"]),
                       "in the shards (after the final cap)": np.array(per_query["kept"])},
                      cap, out / "run" / "query_distribution.png")


def print_table(s: dict, out: Path) -> None:
    rows = [
        ("queries", f"{s['queries']:,} (" + ", ".join(f"{k} {v['queries']:,}" for k, v in s["languages"].items())
                    + "; English: " + ", ".join(f"{k} {v:,}" for k, v in s["queries_per_source"].items()) + ")"),
        ("candidates (WAT img alt texts)", f"{s['candidates']:,} ({s['other_language_texts']:,} in no listed language)"),
        ("matched", f"{s['matched']:,}"),
        ("selected (balanced)", f"{s['selected']:,}"),
        ("downloaded", f"{s['downloaded']:,}"),
        ("shards", f"{s['shards']} ({s['shard_samples']:,} samples)"),
        *((f"  {lang}: t, matched, selected, downloaded, kept",
           f"t {v['t']:.1f}: {v['matched']:,} / {v['selected']:,} / {v['downloaded']:,} / {v['shard_samples']:,}")
          for lang, v in s["languages"].items()),
        ("tokenizer", f"{s['tokenizer']['vocab_size']:,} pieces, trained on the shards' texts "
                      f"(sha256 {str(s['tokenizer']['sha256'])[:12]}...)"),
        ("training steps", f"{s['training_steps']}"),
        ("loss", f"{s['first_loss']:.3f} -> {s['final_loss']:.3f}"),
        ("zero-shot top-1 (en, in training)", f"{s['zero_shot_top1']:.1%} over {s['zero_shot_classes']} classes "
                            f"(chance {s['chance']:.1%}; {len(s['unseen_classes'])} never seen in images)"),
        ("recall@1 / @5 image->text", f"{s['recall_i2t@1']:.1%} / {s['recall_i2t@5']:.1%}"),
        ("recall@1 / @5 text->image", f"{s['recall_t2i@1']:.1%} / {s['recall_t2i@5']:.1%} "
                                      f"(chance@1 {s['retrieval_chance@1']:.2%})"),
        *(row for name, d in s["suite"].items() for row in (
            (f"suite: {name} {d['metric']}", f"{d['value']:.1%} (chance {d['chance']:.1%}; mean of "
                                              f"{len(d['languages']) or 1} languages)"),
            *((f"  {name}/{lang}", f"{v['value']:.1%} (chance {v['chance']:.1%})")
              for lang, v in d["languages"].items()))),
        ("time", f"{s['seconds']:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    print(f"summary: {out / 'summary.json'}; plots in {out / 'run'}: loss.png, logit_scale.png, "
          f"query_distribution.png; per language: {out / 'shards' / 'languages.png'}; "
          f"the suite's in {out / 'eval' / 'suite'}")


def _run(*command) -> None:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(REPO)}
    args = [str(c) for c in command]
    if args[0] == "wit":
        args = [sys.executable, "-m", "wit", *args[1:]]
    done = subprocess.run(args, env=env)
    if done.returncode:
        raise SystemExit(f"demo: {' '.join(args[1:4])} ... failed with exit status {done.returncode}")


def _step(message: str) -> None:
    print(f"== {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
