"""The one resume mechanism of the data stages (`wit.formats.workdir`)."""

from __future__ import annotations

import json
import os
from contextlib import nullcontext

import pytest

from tests.support.faults import small_filesystem
from wit.formats.errors import Unfinished, WitError
from wit.formats import workdir
from wit.formats.workdir import claim


def build(out, fingerprint, units=("a", "b"), overwrite=False, fail_after=None, inputs=()):
    """A toy stage: one file per unit, marked done; a summary; `fail_after` raises there."""
    written = []
    with claim(str(out), "toy", fingerprint, overwrite, inputs) as work:
        if work.complete() is not None:
            return work.complete(), written
        for unit in units:
            if work.done(unit) is not None:
                continue
            if unit == fail_after:
                raise OSError(28, "No space left on device")
            with open(work.path(f"{unit}.txt"), "w") as f:
                f.write(json.dumps(fingerprint))
            work.mark_done(unit, {"n": 1}, [f"{unit}.txt"])
            written.append(unit)
        summary = {"units": len(units)}
        work.finish(summary)
    return summary, written


def test_fresh_resume_and_nothing_to_do(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OSError):
        build(out, {"x": 1}, fail_after="b")
    assert not out.exists() and (tmp_path / ".out.partial" / "a.txt").exists()   # built beside, kept
    summary, written = build(out, {"x": 1})
    assert written == ["b"] and summary == {"units": 2}        # "a" was not done again
    assert sorted(os.listdir(out)) == [".wit", "a.txt", "b.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert build(out, {"x": 1}) == ({"units": 2}, [])          # complete: nothing to do


def test_other_settings_refused_then_overwritten_in_one_step(tmp_path):
    out = tmp_path / "out"
    build(out, {"x": 1})
    with pytest.raises(WitError, match=r"other settings or inputs \(x\).*--overwrite"):
        build(out, {"x": 2})
    with pytest.raises(OSError):
        build(out, {"x": 2}, overwrite=True, fail_after="b")
    assert json.loads((out / "a.txt").read_text()) == {"x": 1}    # the old output, whole
    _, written = build(out, {"x": 2}, overwrite=True)
    assert written == ["b"]                                        # the interrupted overwrite resumed
    assert all(json.loads((out / f).read_text()) == {"x": 2} for f in ("a.txt", "b.txt"))
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_an_unfinished_build_with_other_settings_is_started_afresh(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OSError):
        build(out, {"x": 1}, fail_after="b")
    _, written = build(out, {"x": 2})
    assert written == ["a", "b"] and json.loads((out / "a.txt").read_text()) == {"x": 2}


def test_bad_input_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(WitError), claim(str(out), "toy", {}) as work:
        work.mark_done("a", {})
        raise WitError("bad input")
    assert os.listdir(tmp_path) == []


def test_unfinished_work_is_kept_for_the_rerun(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(Unfinished), claim(str(out), "toy", {}) as work:
        work.mark_done("a", {})
        raise Unfinished("a shard failed; run again")
    assert (tmp_path / ".out.partial" / ".wit" / "units" / "a.json").exists()


def revise(out, fingerprint, fail: bool = False):
    """Add `c.txt` to a complete toy output, as a revision."""
    with claim(str(out), "toy", fingerprint, revise=True) as work:
        assert work.complete() is None and work.root != str(out)
        if fail:
            raise OSError("killed")
        with open(work.path("c.txt"), "w") as f:
            f.write("revised")
        work.finish({"units": 3})


def test_a_revision_starts_as_hard_links_and_replaces_the_output_in_one_step(tmp_path):
    out = tmp_path / "out"
    build(out, {"x": 1})
    inode = (out / "a.txt").stat().st_ino
    with pytest.raises(OSError):
        revise(out, {"x": 1}, fail=True)
    partial = tmp_path / ".out.partial"
    assert (partial / "a.txt").stat().st_ino == inode                 # linked, not copied
    assert not (partial / ".wit" / "complete.json").exists()
    assert sorted(os.listdir(out)) == [".wit", "a.txt", "b.txt"]     # the output as it was
    revise(out, {"x": 1})
    assert (out / "c.txt").read_text() == "revised" and (out / "a.txt").stat().st_ino == inode
    assert json.loads((out / ".wit" / "complete.json").read_text()) == {"units": 3}
    assert sorted(os.listdir(tmp_path)) == ["out"]
    with pytest.raises(WitError, match="no complete `wit toy` output made with these settings"):
        revise(out, {"x": 2})
    with pytest.raises(WitError, match="no complete `wit toy` output made with these settings"):
        revise(tmp_path / "missing", {"x": 1})
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_dirs_that_are_not_this_stages_output_are_refused_untouched(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "000000.tar").write_bytes(b"the user's")
    for overwrite in (False, True):
        with pytest.raises(WitError, match="not empty and not an output of this toolkit"):
            build(foreign, {}, overwrite=overwrite)
    assert os.listdir(foreign) == ["000000.tar"]
    other = tmp_path / "other"
    with claim(str(other), "crawl", {}) as work:
        work.finish({})
    with pytest.raises(WitError, match="holds the output of `wit crawl`"):
        build(other, {}, overwrite=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert build(empty, {})[1] == ["a", "b"]                       # an empty dir is fine


@pytest.mark.parametrize("out", ["in", "in/sub", "."])
def test_out_must_not_be_contain_or_lie_inside_an_input(tmp_path, out):
    (tmp_path / "in").mkdir()
    with pytest.raises(WitError, match="must not be, contain or lie inside the input"):
        build(tmp_path / out, {}, inputs=(str(tmp_path / "in"),))
    assert os.listdir(tmp_path / "in") == []


def test_a_mount_point_is_refused_before_any_work(tmp_path):
    with small_filesystem(tmp_path / "volume", "1m") as volume:
        with pytest.raises(WitError, match="is a mount point.*give a directory inside it"):
            build(volume, {})
        assert os.listdir(volume) == [] and sorted(os.listdir(tmp_path)) == ["volume"]
        assert build(volume / "out", {})[1] == ["a", "b"]


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_kill_around_the_swap_leaves_one_whole_output_and_the_next_run_finishes_it(tmp_path, monkeypatch, when):
    out = tmp_path / "out"
    build(out, {"x": 1})
    real = workdir.exchange_dirs

    def killed(a, b):
        if when == "after":
            real(a, b)
        raise KeyboardInterrupt   # what a kill -9 leaves, at this point

    monkeypatch.setattr(workdir, "exchange_dirs", killed)
    with pytest.raises(KeyboardInterrupt):
        build(out, {"x": 2}, overwrite=True)
    monkeypatch.setattr(workdir, "exchange_dirs", real)
    expected = {"x": 2} if when == "after" else {"x": 1}
    assert all(json.loads((out / f).read_text()) == expected for f in ("a.txt", "b.txt"))
    # a run with the old settings must not take the old output left beside for a new one
    with pytest.raises(WitError, match="other settings") if when == "after" else nullcontext():
        build(out, {"x": 1})
    _, written = build(out, {"x": 2}, overwrite=True)
    assert written == [] and all(json.loads((out / f).read_text()) == {"x": 2} for f in ("a.txt", "b.txt"))
    assert sorted(os.listdir(tmp_path)) == ["out"]
