"""The README cannot disagree with itself: its benchmark figures are the block that `make
bench` writes from tests/bench/results.json (tests/bench/run_all.py), and none appear
outside it, in the rest of the README, in ARCHITECTURE.md or in a page under docs/."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RESULTS = REPO / "tests" / "bench" / "results.json"


def _run_all():
    spec = importlib.util.spec_from_file_location("bench_run_all", REPO / "tests" / "bench" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_all = _run_all()

# benchmark figures: ratios (`2.66x`, `0.4x`) and rates (`413 MB/s`, `158.1 samples/s`)
FIGURE = re.compile(r"(?<![\w.])\d+(?:\.\d+)?x\b"
                    r"|\d[\d,.]*\s*(?:[KMG]B|images|samples|texts|candidates|queries)/s\b")


def split(text: str) -> tuple[str, str]:
    """(the generated block without its bordering blank lines, the README without it)."""
    lines = text.split("\n")
    begins = [i for i, line in enumerate(lines) if line.strip() == run_all.README_BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == run_all.README_END]
    assert len(begins) == 1 and len(ends) == 1 and begins[0] < ends[0], \
        f"README.md needs the lines {run_all.README_BEGIN!r} and {run_all.README_END!r} once each, in that order"
    begin, end = begins[0], ends[0]
    return "\n".join(lines[begin + 1:end]).strip("\n"), "\n".join(lines[:begin] + lines[end + 1:])


def figures_outside(text: str) -> list[str]:
    _, rest = split(text)
    return [f"line {rest.count(chr(10), 0, m.start()) + 1}: {m.group()!r}" for m in FIGURE.finditer(rest)]


def test_generated_block_is_results_json():
    block, _ = split(README.read_text(encoding="utf-8"))
    expected = run_all.render_table(json.loads(RESULTS.read_text(encoding="utf-8")))
    assert block == expected, ("README.md's benchmark block differs from tests/bench/results.json; rewrite it with "
                               "`python -c \"import json,sys; sys.path.insert(0,'tests/bench'); import run_all; "
                               "run_all.update_readme('README.md', json.load(open('tests/bench/results.json')))\"`")


def test_no_benchmark_figure_outside_the_block():
    assert figures_outside(README.read_text(encoding="utf-8")) == []


def test_no_benchmark_figure_in_the_other_pages():
    """docs/performance.md describes the benchmarks; their figures live only in the README's
    block and tests/bench/results.md, so no page can keep a stale one."""
    pages = [REPO / "ARCHITECTURE.md", *sorted((REPO / "docs").glob("*.md"))]
    found = [f"{page.relative_to(REPO)} line {text.count(chr(10), 0, m.start()) + 1}: {m.group()!r}"
             for page in pages for text in [page.read_text(encoding="utf-8")] for m in FIGURE.finditer(text)]
    assert found == []


def test_checks_can_fail(tmp_path):
    """A table edited by hand, a results.json changed without the README, a figure in the
    prose: each is caught."""
    text = README.read_text(encoding="utf-8")
    rows = json.loads(RESULTS.read_text(encoding="utf-8"))
    block, _ = split(text)
    ratio = re.search(r"\*\*\d+\.\d+x\*\*", block).group()
    edited, _ = split(text.replace(ratio, "**9.99x**", 1))
    assert edited != run_all.render_table(rows)
    changed = [{**r, "ratio": r["ratio"] + 1} if r.get("ratio") is not None else r for r in rows]
    assert block != run_all.render_table(changed)
    prose = text.replace("## Performance\n", "## Performance\n\nShard throughput is 0.40x above, 413 MB/s.\n", 1)
    assert len(figures_outside(prose)) == 2

    copy = tmp_path / "README.md"
    copy.write_text(text.replace(ratio, "**9.99x**", 1), encoding="utf-8")
    run_all.update_readme(copy, rows)   # the writer puts the rendering back, the rest untouched
    assert copy.read_text(encoding="utf-8") == text


def test_update_readme_needs_the_markers(tmp_path):
    copy = tmp_path / "README.md"
    copy.write_text("# no markers\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="bench:begin"):
        run_all.update_readme(copy, [])
    assert copy.read_text(encoding="utf-8") == "# no markers\n"
