"""`wit inspect` on a SHARDS dir, valid and damaged every way the command must survive:
a damaged dir gives one `wit inspect: error: ...` line naming the file and the problem,
exit status 1, no traceback and no hang."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.support.images import noise_jpeg
from tests.support.testweb import BOMB_SIDE, bomb_png
from tests.support.witcli import assert_one_line_error, run_wit
from wit.formats.atomic import write_json
from wit.formats.errors import WitError
from wit.formats.shards import DATACARD, MANIFEST, SIZES, shard_name
from wit.formats.tars import write_tar
from wit.shards.datacard import datacard
from wit.shards.inspect import PROBLEMS_IN_MESSAGE, InspectConfig, InspectFailed, run

TIMEOUT = 60  # a hang (a FIFO opened, /dev/zero hashed) fails the test instead of stalling it
CAP = 10
SIZE = (16, 12)


def meta(n: int, image: bytes, width: int = SIZE[0], height: int = SIZE[1]) -> dict:
    return {"uid": f"{n:032x}", "url": f"http://example.invalid/{n}.jpg", "query_ids": [n % 2],
            "width": width, "height": height, "original_width": width, "original_height": height,
            "sha256": hashlib.sha256(image).hexdigest()}


def sample(n: int, key: str | None = None) -> tuple[str, list[tuple[str, bytes]]]:
    image = noise_jpeg(n, SIZE)
    return (key or f"{n:09d}"), [("jpg", image), ("json", json.dumps(meta(n, image)).encode()),
                                 ("txt", f"caption {n}".encode())]


def valid() -> list[list]:
    return [[sample(0), sample(1), sample(2)], [sample(3), sample(4)]]


def write_shards(out: Path, shards: list[list]) -> Path:
    """A SHARDS dir as `wit shard` writes it: tars, sizes.json, datacard.json, manifest.json
    (whose shard entries match the tars, however damaged their samples are)."""
    out.mkdir(parents=True, exist_ok=True)
    for index, samples in enumerate(shards):
        buffer = io.BytesIO()
        write_tar(buffer, samples)
        (out / shard_name(index)).write_bytes(buffer.getvalue())
    total = sum(len(samples) for samples in shards)
    report = {"tars": 1, "samples_read": total, "duplicates_by_uid": 0, "duplicates_by_sha256": 0,
              "unique_samples": total, "balanced_out": 0, "final_samples": total}
    write_json(out / DATACARD, datacard({"downloaded": np.array([3, 2]), "kept": np.array([3, 2])}, CAP, report))
    write_json(out / MANIFEST, {"tool": "wit shard", "cap": CAP, "counts": report, "shards": [
        {"name": shard_name(i), "samples": len(samples)} for i, samples in enumerate(shards)]})
    return refresh_manifest(out)


def refresh_manifest(out: Path) -> Path:
    """Make manifest.json and sizes.json agree with the tars on disk (bytes, sha256, totals)."""
    manifest = json.loads((out / MANIFEST).read_text())
    for shard in manifest["shards"]:
        data = (out / shard["name"]).read_bytes()
        shard["bytes"], shard["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    manifest["total_samples"] = sum(s["samples"] for s in manifest["shards"])
    manifest["total_bytes"] = sum(s["bytes"] for s in manifest["shards"])
    write_json(out / MANIFEST, manifest)
    write_json(out / SIZES, {s["name"]: s["samples"] for s in manifest["shards"]})
    return out


def inspect(out: Path, *options: str):
    result = run_wit("inspect", out, *options, timeout=TIMEOUT)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def replace_part(entry, extension: str, data: bytes | None):
    """The sample with its `extension` member replaced by `data` (removed when None)."""
    key, parts = entry
    return key, [(e, data if e == extension else d) for e, d in parts if e != extension or data is not None]


# ---- a valid dir ----------------------------------------------------------------------


def test_valid_dir_verifies_and_shows(tmp_path):
    out = write_shards(tmp_path / "shards", valid())
    result = inspect(out, "--verify", "--show", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("shards: 2, samples: 5, bytes: ")
    shown = [line for line in lines if "  queries [" in line]
    assert [line.split()[0] for line in shown] == ["000000000", "000000001", "000000002"]
    assert shown[0] == f"000000000  {SIZE[0]}x{SIZE[1]}  queries [0]  'caption 0'"
    assert lines[-1] == "verified: 2 shards, 5 samples, all hashes match"
    assert run(InspectConfig(str(out), True, 4))[-1] == lines[-1]
    assert len(run(InspectConfig(str(out), False, 4))) == 3 + 4


def test_undecodable_key_is_shown_escaped(tmp_path):
    """A member name that is not UTF-8 (or holds a newline) is printed escaped, on one line."""
    out = write_shards(tmp_path / "shards", [[sample(0, key="caf\udcff"), sample(1, key="two\nlines")]])
    result = inspect(out, "--verify", "--show", "2")
    assert result.returncode == 0, result.stderr
    assert "caf\\udcff  16x12" in result.stdout and "two\\nlines  16x12" in result.stdout


# ---- --verify: every problem with its reason ---------------------------------------------


def _json_array(shards):
    shards[0][1] = replace_part(shards[0][1], "json", b"[1, 2]")


def _json_deep(shards):
    shards[0][1] = replace_part(shards[0][1], "json", b"[" * 100_000)


def _json_lacks_fields(shards):
    image = dict(shards[0][1][1])["jpg"]
    fields = {k: v for k, v in meta(1, image).items() if k not in ("uid", "url")}
    shards[0][1] = replace_part(shards[0][1], "json", json.dumps(fields).encode())


def _json_other_sha256(shards):
    shards[0][1] = replace_part(shards[0][1], "json", json.dumps(meta(1, b"other bytes")).encode())


def _json_other_size(shards):
    image = dict(shards[0][1][1])["jpg"]
    shards[0][1] = replace_part(shards[0][1], "json", json.dumps(meta(1, image, width=99)).encode())


def _no_image(shards):
    shards[0][1] = replace_part(shards[0][1], "jpg", None)


def _png_bomb(shards):
    bomb = bomb_png()
    shards[0][1] = ("000000001", [("png", bomb), ("json", json.dumps(meta(1, bomb, BOMB_SIDE, BOMB_SIDE)).encode()),
                                  ("txt", b"a bomb")])


def _duplicate_key(shards):
    shards[0].append(sample(0))


def _duplicate_member(shards):
    key, parts = shards[0][1]
    shards[0][1] = key, parts + [("jpg", parts[0][1])]


def _control_key(shards):
    shards[0][1] = replace_part(sample(1, key="bad\nkey"), "jpg", None)


@pytest.mark.parametrize("damage, fragments", [
    (_json_array, ("000000.tar: sample 000000001: json is an array, not an object",)),
    (_json_deep, ("000000.tar: sample 000000001: unreadable json (nested too deeply)",)),
    (_json_lacks_fields, ("000000.tar: sample 000000001: json lacks uid, url",)),
    (_json_other_sha256, ("000000.tar: sample 000000001: image sha256 differs from its json",)),
    (_json_other_size, ("000000.tar: sample 000000001: jpg image is 16x12, its json says 99x12",)),
    (_no_image, ("000000.tar: sample 000000001: no image (none of jpg, jpeg, webp, png)",)),
    (_png_bomb, ("000000.tar: sample 000000001: png image refused (too_many_pixels",)),
    (_duplicate_key, ("000000.tar: 1 member or sample refused by the tar reader (duplicate_key)",)),
    (_duplicate_member, ("000000.tar: 1 member or sample refused by the tar reader (duplicate_member)",)),
    (_control_key, ("000000.tar: sample bad\\nkey: no image",)),
], ids=lambda v: v.__name__.strip("_") if callable(v) else None)
@pytest.mark.slow
def test_verify_names_the_sample_and_the_problem(tmp_path, damage, fragments):
    shards = valid()
    damage(shards)
    out = write_shards(tmp_path / "shards", shards)
    assert_one_line_error(inspect(out, "--verify"), "inspect", out, *fragments)


def test_verify_truncated_tar(tmp_path):
    out = write_shards(tmp_path / "shards", valid())
    tar = out / shard_name(0)
    tar.write_bytes(tar.read_bytes()[:2048])
    refresh_manifest(out)
    assert_one_line_error(inspect(out, "--verify"), "inspect", f"{tar}: truncated",
                          f"{tar}: 0 good samples, the manifest says 3")


def test_verify_lists_every_problem(tmp_path):
    shards = valid()
    _json_array(shards)
    shards[1][0] = replace_part(shards[1][0], "jpg", None)
    out = write_shards(tmp_path / "shards", shards)
    assert_one_line_error(inspect(out, "--verify"), "inspect", f"{out}: 4 problems found: ",
                          "000000.tar: sample 000000001: json is an array", "000000.tar: 2 good samples",
                          "000001.tar: sample 000000003: no image", "000001.tar: 1 good samples")
    with pytest.raises(InspectFailed) as failed:
        run(InspectConfig(str(out), True, 0))
    problems = [line for line in failed.value.lines if line.startswith("problem: ")]
    assert len(problems) == 4 and all(p.split(": ")[-1] for p in problems)
    assert failed.value.lines[0].startswith("shards: 2, samples: 5")


def test_verify_message_names_the_first_problems(tmp_path):
    shards = [[replace_part(sample(n), "jpg", None) for n in range(PROBLEMS_IN_MESSAGE + 2)]]
    out = write_shards(tmp_path / "shards", shards)
    with pytest.raises(InspectFailed) as failed:
        run(InspectConfig(str(out), True, 0))
    assert str(failed.value).endswith("; and 3 more") and "\n" not in str(failed.value)
    assert len([line for line in failed.value.lines if line.startswith("problem: ")]) == PROBLEMS_IN_MESSAGE + 3


# ---- --show ----------------------------------------------------------------------------


@pytest.mark.parametrize("extension, data, problem", [
    ("json", None, "no json"),
    ("json", b'["a list"]', "json is an array, not an object"),
    ("txt", None, "no txt"),
    ("txt", b"caf\xe9", "txt is not UTF-8 (byte 3)"),
])
def test_show_names_the_sample_and_the_problem(tmp_path, extension, data, problem):
    shards = valid()
    shards[0][1] = replace_part(shards[0][1], extension, data)
    out = write_shards(tmp_path / "shards", shards)
    assert_one_line_error(inspect(out, "--show", "3"), "inspect", f"{out / shard_name(0)}: sample 000000001: {problem}")


def test_show_needs_a_count(tmp_path):
    out = write_shards(tmp_path / "shards", valid())
    assert_one_line_error(inspect(out, "--show", "-1"), "inspect", "--show: -1 is not a number of samples")
    with pytest.raises(WitError, match="--show"):
        run(InspectConfig(str(out), False, -2))


# ---- only regular files are read ---------------------------------------------------------


@pytest.mark.parametrize("options", [("--verify",), ("--show", "3")], ids=["verify", "show"])
@pytest.mark.parametrize("make, problem", [
    (os.mkfifo, "a FIFO, not a regular file"),
    (lambda path: os.symlink("/dev/zero", path), "a symbolic link, not a regular file"),
    (os.mkdir, "a directory, not a regular file"),
], ids=["fifo", "symlink_to_dev_zero", "directory"])
def test_a_shard_that_is_not_a_regular_file(tmp_path, options, make, problem):
    out = write_shards(tmp_path / "shards", valid())
    tar = out / shard_name(0)
    tar.unlink()
    make(str(tar))
    assert_one_line_error(inspect(out, *options), "inspect", f"{tar}: {problem}")


# ---- manifest.json and datacard.json ---------------------------------------------------------


def _edit(name: str, change):
    def damage(out: Path) -> None:
        value = json.loads((out / name).read_text())
        (out / name).write_text(json.dumps(change(value)))
    return damage


def _replace(name: str, text: str):
    return lambda out: (out / name).write_text(text)


def _special(name: str, make):
    def damage(out: Path) -> None:
        (out / name).unlink()
        make(str(out / name))
    return damage


def _shard0(**fields):
    def change(manifest):
        manifest["shards"][0].update(fields)
        return manifest
    return change


def _drop(*path):
    def change(value):
        node = value
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]
        return value
    return change


@pytest.mark.parametrize("damage, problem", [
    (_edit(MANIFEST, lambda m: m["shards"]), "manifest.json: shard manifest (not a finished `wit shard` output?) "
                                            "must be a JSON object, not list"),
    (_edit(MANIFEST, _drop("counts")), "manifest.json: field 'counts' missing or not a dict"),
    (_edit(MANIFEST, _drop("counts", "samples_read")), "manifest.json: field 'counts.samples_read' missing"),
    (_edit(MANIFEST, _drop("shards", 0, "sha256")), "manifest.json: shards[0].sha256 missing or not a str"),
    (_edit(MANIFEST, _shard0(name="/dev/zero")), "manifest.json: shards[0].name '/dev/zero' is not a plain file name"),
    (_edit(MANIFEST, _shard0(name="../shards/000000.tar")), "is not a plain file name"),
    (_replace(MANIFEST, "{not json"), "manifest.json: unreadable shard manifest"),
    (_replace(MANIFEST, "[" * 100_000), "manifest.json: unreadable shard manifest"),
    (_special(MANIFEST, os.mkfifo), "manifest.json: not a regular file"),
    (_special(DATACARD, lambda path: None), "datacard.json: missing"),
    (_special(DATACARD, os.mkfifo), "datacard.json: not a regular file"),
    (_special(DATACARD, os.mkdir), "datacard.json: not a regular file"),
    (_replace(DATACARD, "{not json"), "datacard.json: unreadable data card"),
    (_edit(DATACARD, lambda card: [card]), "datacard.json: data card (not a finished `wit shard` output?) "
                                           "must be a JSON object, not list"),
    (_edit(DATACARD, _drop("head")), "datacard.json: field 'head.queries' missing or not an integer"),
], ids=["manifest_list", "manifest_no_counts", "manifest_no_samples_read", "shard_no_sha256", "shard_dev_zero",
        "shard_path", "manifest_not_json", "manifest_nested", "manifest_fifo", "datacard_missing", "datacard_fifo",
        "datacard_directory", "datacard_not_json", "datacard_list", "datacard_no_head"])
@pytest.mark.slow
def test_damaged_manifest_or_datacard(tmp_path, damage, problem):
    out = write_shards(tmp_path / "shards", valid())
    damage(out)
    assert_one_line_error(inspect(out, "--verify", "--show", "3"), "inspect", f"{out}/", problem)


def test_not_a_shards_dir(tmp_path):
    assert_one_line_error(inspect(tmp_path / "absent"), "inspect", f"{tmp_path / 'absent'}: missing")
    (tmp_path / "file").write_text("")
    assert_one_line_error(inspect(tmp_path / "file"), "inspect", f"{tmp_path / 'file'}: not a directory")
