"""What a suite run reports: results.json (every set's metrics, per language where it has
languages, where its class names and templates came from, the sets missing or skipped), one
table and one bar per set and per language of a set."""

from __future__ import annotations

from pathlib import Path

from train.eval.suite import MEAN, PREFIX, TASKS, SuiteTask
from wit.formats.atomic import atomic_path

TASK_NAMES = {kind: name for name, kind in TASKS.items()}


def results(task: SuiteTask, metrics: dict[str, float]) -> dict:
    """The suite's part of results.json from the flat `suite/<name>/<metric>` metrics."""
    datasets = []
    for dataset in task.datasets:
        prefix = f"{PREFIX}{dataset.entry.name}/"
        own = {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}
        languages = {}
        for lang in dataset.languages:
            mine = {k[len(lang) + 1:]: own.pop(k) for k in list(own) if k.startswith(f"{lang}/")}
            languages[lang] = {"value": mine.pop("value"), "chance": mine.pop("chance"), "metrics": mine}
        for key in [k for k in own if "/" in k]:    # a language of the set not asked for
            own.pop(key)
        datasets.append({"name": dataset.entry.name, "task": TASK_NAMES[dataset.kind], "path": dataset.entry.path,
                         "metric": dataset.metric, "value": own.pop("value"), "chance": own.pop("chance"),
                         **dataset.sources, "metrics": own, **({"languages": languages} if languages else {})})
    return {"suite": task.suite.path, "datasets": datasets, "classification_mean": metrics.get(MEAN),
            "missing": [{"name": e.name, "path": e.path} for e in task.missing],
            "skipped": [{"name": e.name, "reason": e.skip} for e in task.suite.entries if e.skip]}


def table(report: dict) -> str:
    """One row per set (dataset, metric, value, chance), then the classification mean and
    the sets not run."""
    rows = [("dataset", "metric", "value", "chance")]
    for d in report["datasets"]:
        languages = d.get("languages", {})
        mean = f" (mean of {len(languages)} languages)" if languages else ""
        rows.append((d["name"], d["metric"] + mean, f"{d['value']:.2%}", f"{d['chance']:.2%}"))
        rows += [(f"  {d['name']}/{lang}", d["metric"], f"{v['value']:.2%}", f"{v['chance']:.2%}")
                 for lang, v in languages.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(f"{cell:<{w}}" if i < 2 else f"{cell:>{w}}" for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    classification = sum(d["task"] == "zeroshot_classification" for d in report["datasets"])
    if report["classification_mean"] is not None:
        lines.append(f"mean over {classification} classification set{'s' * (classification != 1)}: "
                     f"{report['classification_mean']:.2%}")
    lines += [f"missing: {m['name']} ({m['path']})" for m in report["missing"]]
    lines += [f"skipped: {s['name']} ({s['reason']})" for s in report["skipped"]]
    return "\n".join(lines)


def plot(report: dict, path: str | Path) -> None:
    """One bar per set (its value), its chance level marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    datasets = [bar for d in report["datasets"] for bar in
                [d, *({"name": f"{d['name']}/{lang}", **v} for lang, v in d.get("languages", {}).items())]]
    figure = Figure(figsize=(max(4, 0.5 * len(datasets) + 2), 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.1, 0.3, 0.85, 0.6))
    positions = range(len(datasets))
    axes.bar(positions, [d["value"] for d in datasets], color="tab:blue", label="value")
    axes.scatter(positions, [d["chance"] for d in datasets], color="grey", marker="_", s=300, label="chance")
    axes.set_xticks(list(positions), [d["name"] for d in datasets], rotation=60, ha="right", fontsize=8)
    axes.set_ylim(0, 1)
    axes.set_ylabel("value of the set's metric")
    mean = report["classification_mean"]
    axes.set_title(f"{Path(report['suite']).name}" + (f": classification mean {mean:.1%}" if mean is not None else ""))
    axes.legend(fontsize=8)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})
