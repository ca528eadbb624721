"""`wit view` as a user meets it: a real subprocess serving a SHARDS dir built by `wit shard`,
its EMBED dir (`wit embed`) and a FILTER dir (`wit filter`), driven by a headless Chromium
(selenium) and, for what a browser would tidy up, plain HTTP: paging reaches every sample,
searches find what they should, hostile captions stay text, nothing outside the index is
served, a filter's removals are shown beside what they matched; and the index resumes."""

from __future__ import annotations

import io
import json
import shutil
import urllib.error
import urllib.request

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By

from tests.support.checkpoints import write_checkpoint
from tests.support.witcli import assert_one_line_error, run_wit, wit_in_process
from tests.support.worldwide import ENTRIES
from wit.formats.errors import WitError
from wit.formats.images import ImageRefused
from wit.view import index as view_index
from wit.view.images import resized_jpeg
from wit.view.sources import open_shards


def uids_on(browser) -> list[str]:
    return [li.get_attribute("data-uid") for li in browser.find_elements(By.CSS_SELECTOR, "li.card")]


def walk(browser, url: str) -> list[list[str]]:
    """The uids of every page of a listing, following its `next` links from `url`."""
    browser.get(url)
    pages = [uids_on(browser)]
    while links := browser.find_elements(By.CSS_SELECTOR, "nav.pager a[rel=next]"):
        links[0].click()
        pages.append(uids_on(browser))
        assert len(pages) < 100
    return pages


def fetch(url: str, method: str = "GET", headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def loaded(browser, image) -> bool:
    return browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", image)


@pytest.mark.slow
def test_paging_reaches_every_sample_once_by_all_language_and_query(server, browser, world, screenshot):
    browser.get(server.url)
    screenshot("home")
    assert str(world["shards"]) in browser.find_element(By.TAG_NAME, "h1").text
    pages = walk(browser, server.url + "samples")
    screenshot("samples_last_page")
    everything = {s.uid for s in world["samples"]}
    size = server.page_size
    assert len(pages) == -(-len(everything) // size) and all(len(p) == size for p in pages[:-1])
    assert sum(len(p) for p in pages) == len(everything) and set().union(*pages) == everything   # each once
    browser.find_element(By.CSS_SELECTOR, "nav.pager a[rel=prev]").click()   # back one page
    assert uids_on(browser) == pages[-2]

    browser.get(server.url + "languages")
    rows = {r.find_elements(By.TAG_NAME, "td")[0].text: r.find_elements(By.TAG_NAME, "td")[1].text
            for r in browser.find_elements(By.CSS_SELECTOR, "table.list tr")[1:]}
    by_lang = {lang: {s.uid for s in world["samples"] if s.lang == lang} for lang in ENTRIES}
    assert rows == {lang: str(len(uids)) for lang, uids in by_lang.items()}
    browser.find_element(By.LINK_TEXT, "ja").click()
    screenshot("language_ja")
    assert set(uids_on(browser)) == by_lang["ja"]
    assert {p for page in walk(browser, server.url + "languages/en") for p in page} == by_lang["en"]

    cat = ENTRIES["en"].index("cat")
    with_cat = {s.uid for s in world["samples"] if s.lang == "en" and cat in s.query_ids}
    browser.get(server.url + "queries")
    screenshot("queries")
    browser.find_element(By.LINK_TEXT, "cat (en)").click()   # the query's name, from the crawl's list
    assert browser.find_element(By.CSS_SELECTOR, "p.query q").text.strip('“”"') == "cat"
    assert {u for page in walk(browser, browser.current_url) for u in page} == with_cat

    browser.get(server.url + "datacard")
    screenshot("datacard")
    assert all(loaded(browser, im) for im in browser.find_elements(By.CSS_SELECTOR, "figure.plot img"))
    card = json.loads((world["shards"] / "datacard.json").read_text())
    linked = browser.find_elements(By.CSS_SELECTOR, "main table.list a[href^='/queries/']")
    assert len(linked) == len(card["per_query"]["query_id"]) and "cat (en)" in {a.text for a in linked}


@pytest.mark.slow
def test_hostile_caption_is_shown_as_text_and_runs_nothing(server, browser, world, screenshot):
    hostile_text = world["hostile"]
    hostile = next(s for s in world["samples"] if s.text == hostile_text)
    browser.get(f"{server.url}sample/{hostile.uid}")
    screenshot("sample_hostile")
    assert browser.find_element(By.CSS_SELECTOR, "p.fulltext").text == hostile_text
    browser.get(f"{server.url}search?caption=black+cat")
    card = browser.find_element(By.CSS_SELECTOR, f"li.card[data-uid='{hostile.uid}']")
    assert card.find_element(By.CSS_SELECTOR, "p.caption").text == hostile_text
    for page in (f"sample/{hostile.uid}", "search?caption=black+cat", "languages/en"):
        browser.get(server.url + page)
        assert browser.execute_script("return typeof window.hacked") == "undefined"
        assert not browser.find_elements(By.CSS_SELECTOR, "img[src=x], script")
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text
    status, headers, body = fetch(f"{server.url}sample/{hostile.uid}")
    assert status == 200 and b"&lt;script&gt;window.hacked=1&lt;/script&gt;" in body and b"<script" not in body
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.slow
def test_text_search_and_more_like_this_find_the_nearest_images(server, browser, world, screenshot):
    import torch

    from train.model.clip import load
    from train.model.encode import Encoder, inference
    from wit.formats.embeddings import read_embeddings

    text = "Fresh bread and cheese on a wooden table"
    loaded_model = load(world["checkpoint"])
    with inference(loaded_model.model):
        query = Encoder(torch.device("cpu"), 1, loaded_model.mean, loaded_model.std).texts(
            loaded_model.model, loaded_model.tokenizer([text]))[0].numpy()
    table = read_embeddings(str(world["embed"]), str(world["shards"]))
    vectors = np.array(table["image"].to_pylist(), np.float32)
    expected = [table["uid"][int(i)].as_py() for i in np.argsort(-(vectors @ query))[:5]]

    browser.get(server.url + "search")
    field = browser.find_element(By.CSS_SELECTOR, "input[name=text]")
    field.send_keys(text)
    field.submit()
    screenshot("search_text")
    assert uids_on(browser)[:5] == expected

    sample = world["samples"][7]
    browser.get(f"{server.url}sample/{sample.uid}")
    browser.find_element(By.CSS_SELECTOR, "a.similar").click()
    screenshot("more_like_this")
    found = uids_on(browser)
    assert found[0] == sample.uid and len(found) == len(world["samples"])
    scores = [float(e.text.split()[-1]) for e in browser.find_elements(By.CSS_SELECTOR, "span.score")]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(1.0, abs=1e-4)

    browser.get(f"{server.url}search?caption=Leuchtturm")   # caption search (FTS5), any language
    assert uids_on(browser) == [s.uid for s in world["samples"] if "Leuchtturm" in s.text]


@pytest.mark.slow
def test_removed_pages_show_the_evaluation_image_and_the_kept_twin(server, browser, world, screenshot):
    removed = pq.read_table(world["filtered"] / "removed.parquet").to_pylist()
    leak = next(r for r in removed if r["filter"] == "decontaminate")
    twin = next(r for r in removed if r["filter"] == "near_dup")
    browser.get(server.url + "removed")
    screenshot("removed")
    cells = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
             for tr in browser.find_elements(By.CSS_SELECTOR, "table.list tr")[1:]]
    assert sorted(cells) == sorted([[r["filter"], r["reason"], "1"] for r in (leak, twin)])

    browser.find_element(By.CSS_SELECTOR, f"a[href='/removed/decontaminate/{leak['reason']}']").click()
    screenshot("removed_decontaminate")
    pair = browser.find_element(By.CSS_SELECTOR, "li.pair")
    assert pair.get_attribute("data-uid") == leak["uid"]
    image = pair.find_element(By.CSS_SELECTOR, "img.evalimage")
    assert loaded(browser, image)
    name, index = leak["match"].split(":")
    assert name == "folder_eval" and f"evaluation image {index} of {name}" in pair.text
    status, _, body = fetch(image.get_attribute("src"))   # the evaluation image it matched, not another
    shown = np.asarray(Image.open(io.BytesIO(body)).convert("L"), np.float32)
    differences = [np.abs(shown - np.asarray(Image.open(io.BytesIO(im)).convert("L").resize(shown.shape[::-1]),
                                               np.float32)).mean() for im in world["eval_images"]]
    assert status == 200 and int(np.argmin(differences)) == int(index) and min(differences) < 8
    assert fetch(f"{server.url}eval/{name}/{(int(index) + 1) % 6}.jpg")[0] == 404   # only matched images

    browser.get(f"{server.url}removed/near_dup/{twin['reason']}")
    screenshot("removed_near_dup")
    pair = browser.find_element(By.CSS_SELECTOR, "li.pair")
    assert pair.get_attribute("data-uid") == twin["uid"]
    assert pair.find_element(By.CSS_SELECTOR, "a.twin").text == twin["match"]
    assert all(loaded(browser, im) for im in pair.find_elements(By.TAG_NAME, "img"))

    browser.get(f"{server.url}sample/{twin['uid']}")
    assert "near_dup" in browser.find_element(By.CSS_SELECTOR, "table.removal").text
    browser.get(f"{server.url}sample/{twin['match']}")
    screenshot("sample_kept_twin")
    assert browser.find_element(By.CSS_SELECTOR, "p.kept").text == "kept by the filter"
    annotations = pq.read_table(world["filtered"] / "annotations.parquet").to_pylist()
    expected = next(a for a in annotations if a["uid"] == twin["match"])
    shown = {tr.find_element(By.TAG_NAME, "th").text: tr.find_element(By.TAG_NAME, "td").text
             for tr in browser.find_elements(By.CSS_SELECTOR, "table.annotations tr")}
    assert shown.keys() == {"semdedup_cluster", "semdedup_distance"}   # the filter's annotations of it
    assert int(shown["semdedup_cluster"]) == expected["semdedup_cluster"]
    assert float(shown["semdedup_distance"]) == pytest.approx(expected["semdedup_distance"])
    assert twin["uid"] in [li.get_attribute("data-uid") for li in browser.find_elements(By.CSS_SELECTOR, "li.twin")]
    browser.get(f"{server.url}filtered/datacard")
    assert "removed" in browser.find_element(By.TAG_NAME, "main").text


@pytest.mark.slow
def test_nothing_outside_the_index_is_served(server, world):
    manifest = (world["shards"] / "manifest.json").read_bytes()
    sample = world["samples"][0].uid
    for path in ("../manifest.json", "%2e%2e/manifest.json", "%2e%2e/%2e%2e/etc/passwd", "sample/..%2f..%2fmanifest.json",
                 "thumb/%2e%2e%2fmanifest.json.jpg", "static/../../manifest.json", "manifest.json", "000000.tar",
                 "datacard.json", f"thumb/{sample}%2f..%2f..%2fmanifest.json.jpg", "sample/" + "0" * 32,
                 "eval/folder_eval/..%2f..%2fclass0%2f0.jpg", "queries/xx/99999", "languages/%2e%2e"):
        status, _, body = fetch(server.url + path)
        assert status in (400, 404), path
        assert manifest[:40] not in body and b"root:" not in body
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        status, headers, _ = fetch(server.url, method)
        assert status == 405 and headers["Allow"] == "GET, HEAD", method
    assert fetch(server.url, "HEAD")[0] == 200
    assert fetch(server.url + "samples?after=1e3")[0] == 400
    # arguments that name a route's own, or url_for's, and numbers past SQLite's integers: refused, never a 500
    lang = world["samples"][0].lang or "-"
    for path in (f"languages/{lang}?lang=fr", "languages/en?_method=POST&endpoint=x&_external=1",
                 "queries/-/100000000000000000000", f"queries?page={10 ** 17}", "eval/folder_eval/99999999999.jpg",
                 "removed/near_dup/phash?reason=x&filter_=y"):
        assert fetch(server.url + path)[0] in (200, 400, 404), path
    assert fetch(server.url, headers={"Host": "attacker.example"})[0] == 400   # DNS rebinding
    status, headers, body = fetch(f"{server.url}thumb/{sample}.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and max(Image.open(io.BytesIO(body)).size) <= 256


def test_a_header_over_the_pixel_cap_is_never_decoded():
    png = io.BytesIO()
    Image.new("L", (1, 1)).save(png, "PNG")
    data = bytearray(png.getvalue())
    data[16:24] = (30_000).to_bytes(4, "big") * 2    # IHDR: 30000 x 30000
    with pytest.raises(ImageRefused):
        resized_jpeg(bytes(data), 256)


@pytest.mark.slow
def test_bad_inputs_are_one_line_errors(world, tmp_path, capsys):
    index = ["--index", tmp_path / "index", "--index-only"]
    result = wit_in_process(capsys, "view", tmp_path, *index)
    assert_one_line_error(result, "view", "manifest.json")
    result = wit_in_process(capsys, "view", world["shards"], "--index", world["shards"] / "cache")
    assert_one_line_error(result, "view", "inside the SHARDS dir")

    other = tmp_path / "filtered"
    shutil.copytree(world["filtered"], other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["inputs"]["shards"] = str(tmp_path / "elsewhere")
    (other / "manifest.json").write_text(json.dumps(manifest))
    result = wit_in_process(capsys, "view", world["shards"], "--filtered", other, *index)
    assert_one_line_error(result, "view", str(other / "manifest.json"), "another SHARDS dir")

    embed = tmp_path / "embed"
    shutil.copytree(world["embed"], embed)
    summary = json.loads((embed / "embed.json").read_text())
    summary["manifest_sha256"] = "0" * 64
    (embed / "embed.json").write_text(json.dumps(summary))
    result = wit_in_process(capsys, "view", world["shards"], "--embeddings", embed, *index)
    assert_one_line_error(result, "view", str(embed / "embed.json"), "embeddings of other shards")

    result = wit_in_process(capsys, "view", world["shards"], "--embeddings", world["embed"], "--checkpoint",
                            write_checkpoint(tmp_path / "other.pt", seed=1), *index)
    assert_one_line_error(result, "view", "other.pt", "not the checkpoint")
    result = wit_in_process(capsys, "view", world["shards"], "--checkpoint", world["checkpoint"], *index)
    assert_one_line_error(result, "view", "--checkpoint: only with --embeddings")


@pytest.mark.slow
def test_a_stopped_index_build_resumes_where_it_stopped(world, tmp_path):
    shards = open_shards(str(world["shards"]))
    path = str(tmp_path / "index.sqlite")

    def stop_after_two(done, total, samples):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        view_index.build(shards.root, shards.manifest, path, shards.identity, progress=stop_after_two)
    partial = view_index.connect(path)
    assert [r[0] for r in partial.execute("SELECT shard FROM shards ORDER BY shard")] == [0, 1]
    assert partial.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 16
    partial.close()
    report = view_index.build(shards.root, shards.manifest, path, shards.identity)
    assert report.built == len(shards.manifest["shards"]) - 2 and report.samples == len(world["samples"])
    fresh = str(tmp_path / "fresh.sqlite")
    view_index.build(shards.root, shards.manifest, fresh, shards.identity)
    rows = [view_index.connect(p).execute("SELECT * FROM samples ORDER BY id").fetchall() for p in (path, fresh)]
    assert rows[0] == rows[1] and [r[0] for r in rows[0]] == list(range(len(world["samples"])))
    found = view_index.Index(path)
    assert found.page("caption", view_index.fts_query("Leuchtturm"), None, None, 5).rows[0]["lang"] == "de"
    with pytest.raises(WitError, match="another SHARDS dir"):
        view_index.build(shards.root, shards.manifest, path, {**shards.identity, "manifest_sha256": "0" * 64})


def test_above_the_exact_limit_search_goes_through_an_ivf_index_built_once(tmp_path):
    from wit.view.vectors import Vectors

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    base = str(tmp_path / "vectors")
    vectors.tofile(base + ".f32")
    np.save(base + ".ids.npy", np.arange(0, 6000, 2))   # sample ids need not be dense
    (tmp_path / "vectors.json").write_text(json.dumps({"dim": 32, "count": 3000}))
    exact, approximate = Vectors(base), Vectors(base, exact_limit=1000)
    assert exact.faiss is None and approximate.faiss is not None and (tmp_path / "vectors.ivf").exists()
    for row in (0, 1234, 2999):
        truth = np.argsort(-(vectors @ vectors[row]))[:10] * 2
        assert [s for s, _ in exact.nearest(vectors[row], 10)] == truth.tolist()
        found = [s for s, _ in approximate.nearest(approximate.vector(2 * row), 10)]
        assert found[0] == 2 * row and len(set(found) & set(truth.tolist())) >= 7
    assert exact.vector(1) is None   # not a sample with a vector


@pytest.mark.slow
def test_a_killed_index_build_resumes_and_equals_a_straight_one(world, tmp_path):
    """`wit view --index-only` killed (SIGKILL, its whole group) between shard transactions:
    the shards it stored stay stored, and the rerun finishes the same index a straight build
    makes."""
    import os
    import signal
    import subprocess
    import time

    from tests.cli import run_module

    index = tmp_path / "killed"
    args = ["view", str(world["shards"]), "--index-only", "--index", str(index), "--workers", "1"]
    process = run_module("tests.wit.slowed", "wit.view.index:store_shard", "0.7", *args, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    database = index / view_index.INDEX_FILE
    deadline = time.time() + 120
    stored: list[int] = []
    while time.time() < deadline and len(stored) < 2:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        if database.exists():
            conn = view_index.connect(str(database))
            try:
                stored = [r[0] for r in conn.execute("SELECT shard FROM shards")]
            except Exception:   # noqa: BLE001 - the schema may not be there yet
                stored = []
            finally:
                conn.close()
        time.sleep(0.05)
    assert len(stored) >= 2, "two shards were not stored within 120 s"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    kept = {r[0] for r in view_index.connect(str(database)).execute("SELECT shard FROM shards")}
    assert kept >= set(stored) and len(kept) < len(open_shards(str(world["shards"])).manifest["shards"])
    resumed = run_wit(*args[:-2], "--workers", "1")
    assert resumed.returncode == 0, resumed.stderr
    straight = tmp_path / "straight"
    assert run_wit("view", str(world["shards"]), "--index-only", "--index", str(straight)).returncode == 0
    rows = [view_index.connect(str(d / view_index.INDEX_FILE)).execute("SELECT * FROM samples ORDER BY id").fetchall()
            for d in (index, straight)]
    assert rows[0] == rows[1] and len(rows[0]) == len(world["samples"])
