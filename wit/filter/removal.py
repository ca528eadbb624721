"""What every filter of `wit filter` shares: the one shape of a filter, and the removals
counted, written to removed.parquet and summed up in the data card in one place.

A filter is a `Filter`: it has a `name` (removed.parquet's `filter` column) and, called
with the input's sample table (see samples.py) and the mask of the samples still kept,
yields a `Removed` for each kept sample it removes: the row, a reason, what it matched and
a value (a distance, a score). Filters run in order, each judging only what the ones
before kept. A filter may also leave, after its call, `annotations`: per-sample values
(`Annotation`) that are written to annotations.parquet (every input sample) and into the
json of every kept sample (`Removal.json_fields`), where users, later filters' readers and
`wit view` find them.

A new filter is one module: a class of this shape with a `from_config(config, inputs)`
that returns it (or None when its flags are off), listed once in `filters.FILTERS`."""

from __future__ import annotations

from typing import Iterable, NamedTuple, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wit.formats.atomic import write_parquet

REMOVED = "removed.parquet"
ANNOTATIONS = "annotations.parquet"
REMOVED_SCHEMA = pa.schema([("uid", pa.string()), ("filter", pa.string()), ("reason", pa.string()),
                            ("match", pa.string()), ("value", pa.float64())])


class Removed(NamedTuple):
    row: int
    reason: str
    match: str | None = None
    value: float | None = None


class Annotation(NamedTuple):
    """Per-sample values a filter records: `column` in annotations.parquet, `path` in the
    sample json (("semdedup", "cluster") is json["semdedup"]["cluster"]). Missing values
    (NaN, or a negative integer) are null in the table and absent from the json."""
    column: str
    path: tuple[str, ...]
    values: np.ndarray


class Filter(Protocol):
    name: str

    def __call__(self, samples: pa.Table, alive: np.ndarray) -> Iterable[Removed]:
        ...


def _missing(values: np.ndarray) -> np.ndarray:
    return np.isnan(values) if values.dtype.kind == "f" else values < 0


class Removal:
    """Which samples are removed, by which filter, why, matching what."""

    def __init__(self, n: int, filters: tuple[str, ...]) -> None:
        self.filters = filters
        self.alive = np.ones(n, bool)
        self.filter = np.full(n, -1, np.int8)
        self.reason: list[str | None] = [None] * n
        self.match: list[str | None] = [None] * n
        self.value = np.full(n, np.nan)
        self.annotations: list[Annotation] = []

    def apply(self, chosen: Filter, samples: pa.Table) -> None:
        """Run one filter over the samples kept so far and record what it removes."""
        index = self.filters.index(chosen.name)
        for removed in chosen(samples, self.alive.copy()):
            row = int(removed.row)
            assert self.alive[row], f"{chosen.name}: removed row {row} twice"
            self.alive[row], self.filter[row] = False, index
            self.reason[row], self.match[row] = removed.reason, removed.match
            if removed.value is not None:
                self.value[row] = removed.value
        self.annotations += getattr(chosen, "annotations", [])

    def counts(self) -> dict:
        """Removed samples per filter, and per filter and reason."""
        removed = {f: 0 for f in self.filters}
        reasons: dict[str, dict[str, int]] = {f: {} for f in self.filters}
        for row in np.flatnonzero(~self.alive):
            name = self.filters[self.filter[row]]
            removed[name] += 1
            reasons[name][self.reason[row]] = reasons[name].get(self.reason[row], 0) + 1
        return {"removed": removed, "removed_by_reason": {f: dict(sorted(r.items())) for f, r in reasons.items()}}

    def write(self, path: str, uids: pa.ChunkedArray) -> None:
        """removed.parquet: one row per removed sample."""
        rows = np.flatnonzero(~self.alive)
        table = pa.table({
            "uid": uids.take(pa.array(rows)),
            "filter": pa.array([self.filters[self.filter[r]] for r in rows], pa.string()),
            "reason": pa.array([self.reason[r] for r in rows], pa.string()),
            "match": pa.array([self.match[r] for r in rows], pa.string()),
            "value": pa.array(self.value[rows], pa.float64(), mask=np.isnan(self.value[rows])),
        }, schema=REMOVED_SCHEMA)
        write_parquet(path, table)

    def write_annotations(self, path: str, uids: pa.ChunkedArray) -> bool:
        """annotations.parquet: every input sample's uid and the filters' annotations (none
        written when no filter left any); whether it was written."""
        if not self.annotations:
            return False
        columns = {"uid": uids.combine_chunks()}
        for a in self.annotations:
            columns[a.column] = pa.array(a.values, mask=_missing(a.values))
        write_parquet(path, pa.table(columns))
        return True

    def json_fields(self, row: int) -> dict:
        """The annotations of one sample, as nested fields of its json ({} for none)."""
        fields: dict = {}
        for a in self.annotations:
            value = a.values[row]
            if _missing(np.asarray(value)):
                continue
            *parents, leaf = a.path
            place = fields
            for key in parents:
                place = place.setdefault(key, {})
            place[leaf] = value.item()
        return fields

    def datacard(self, query_ids: pa.ChunkedArray, counts: dict) -> tuple[dict, np.ndarray, np.ndarray]:
        """What each filter removed, and the samples per query before and after filtering
        (queries with samples only); with the samples per query before and after."""
        before = per_query(query_ids)
        kept = per_query(query_ids.take(pa.array(np.flatnonzero(self.alive))))
        after = np.pad(kept, (0, len(before) - len(kept)))
        present = np.flatnonzero(before)
        card = {
            "totals": {"input_samples": counts["input_samples"], "kept_samples": counts["kept_samples"]},
            "removed": counts["removed"], "removed_by_reason": counts["removed_by_reason"],
            "queries_with_samples": {"before": int((before > 0).sum()), "after": int((after > 0).sum())},
            "per_query": {"query_id": present.tolist(), "before": before[present].tolist(),
                          "after": after[present].tolist()},
        }
        return card, before, kept


def per_query(query_ids: pa.ChunkedArray) -> np.ndarray:
    """Samples per query id."""
    flat = pc.list_flatten(query_ids).to_numpy(zero_copy_only=False) if len(query_ids) else np.zeros(0, np.int64)
    return np.bincount(flat.astype(np.int64)) if len(flat) else np.zeros(0, np.int64)
