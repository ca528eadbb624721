"""The demo world in Japanese and Chinese: captions that describe their scenes, an
evaluation set captioned in every language, pages in each language, and the generated
Wikipedia dumps the demo builds its ja and zh query lists from."""

from __future__ import annotations

import json
import random
import re
import tarfile
from collections import Counter

import pytest

from tests.support.witcli import wit_in_process
from wit.formats.languages import LanguageIdentifier
from wit.demo import phrases, web
from wit.demo.world import COLOURS, SHAPES, sample_scene, write_shards
from wit.demo.wikis import TITLES, write_wiki

WORDS = {  # colour, shape, count and place words per language
    "ja": (phrases.JA_COLOURS, phrases.JA_SHAPES, phrases.JA_NUMBERS, phrases.JA_PLACES),
    "zh": (phrases.ZH_COLOURS, phrases.ZH_SHAPES, phrases.ZH_NUMBERS, phrases.ZH_PLACES),
}


@pytest.mark.parametrize("lang", ["ja", "zh"])
def test_captions_without_spaces_describe_their_scenes_in_several_phrasings(lang):
    colours, shapes, numbers, places = WORDS[lang]
    rng = random.Random(3)
    scenes = [sample_scene(rng, lang=lang) for _ in range(2000)]
    forms = set()
    for scene in scenes:
        text = scene.caption
        assert " " not in text, text
        assert {c for c, word in colours.items() if word in text} == {scene.colour}, (scene, text)
        assert {s for s, word in shapes.items() if word in text} == {scene.shape}, (scene, text)
        said = {n for n, word in numbers.items() if word in text}
        assert said <= {scene.count} and (said or scene.count == 1), (scene, text)
        where = {p for p, words in places.items() if any(w in text for w in words)}
        assert where <= {scene.position}, (scene, text)
        form = text
        for word in [*colours.values(), *shapes.values(), *numbers.values(), *(w for ws in places.values() for w in ws)]:
            form = form.replace(word, "<w>")
        forms.add(form.rstrip("。"))
    assert len(forms) >= 12, forms
    assert {s.colour for s in scenes} == set(COLOURS) and {s.shape for s in scenes} == set(SHAPES)
    # the crawl's offline language ID names most of them right (the rest is realistic noise)
    found = Counter(LanguageIdentifier({"en", "ja", "zh"}).identify([s.caption for s in scenes]))
    assert found[lang] >= 0.85 * len(scenes), found


def test_class_names_and_templates_exist_in_every_language():
    for lang in phrases.LANGUAGES:
        names = [phrases.class_name(f"{c} {s}", lang) for c in COLOURS for s in SHAPES]
        assert len(set(names)) == len(COLOURS) * len(SHAPES)
        assert all(t.count("{}") == 1 for t in phrases.TEMPLATES[lang])
    assert phrases.class_name("red circle", "ja") == "赤い円" and phrases.class_name("red circle", "en") == "red circle"
    with pytest.raises(ValueError, match="not 'ko'"):
        phrases.class_name("red circle", "ko")


def test_a_retrieval_set_captions_each_scene_in_every_language(tmp_path):
    write_shards(tmp_path / "a", 30, seed=4, samples_per_shard=30, languages=phrases.LANGUAGES)
    write_shards(tmp_path / "b", 30, seed=4, samples_per_shard=30, languages=phrases.LANGUAGES)
    assert (tmp_path / "a" / "000000.tar").read_bytes() == (tmp_path / "b" / "000000.tar").read_bytes()
    with tarfile.open(tmp_path / "a" / "000000.tar") as tar:
        members = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.name.endswith(".txt")}
    keys = sorted({name.split(".")[0] for name in members})
    assert len(keys) == 30 and all(name.count(".") == 2 for name in members)   # KEY.LANG.txt only
    for key in keys:
        en = members[f"{key}.en.txt"]
        colour = next(c for c in COLOURS if re.search(rf"\b{c}\b", en))
        for lang in ("ja", "zh"):
            assert WORDS[lang][0][colour] in members[f"{key}.{lang}.txt"], (en, members[f"{key}.{lang}.txt"])
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["languages"] == ["en", "ja", "zh"]
    with pytest.raises(Exception, match="unknown language ko"):
        write_shards(tmp_path / "c", 3, seed=4, samples_per_shard=3, languages=["ko"])


def test_the_site_writes_each_page_in_its_language(tmp_path):
    pages = web.build_site(tmp_path / "site", 6, 5, seed=2, languages=phrases.LANGUAGES)
    assert [p.lang for p in pages] == ["en", "ja", "zh"] * 2
    identify = LanguageIdentifier({"en", "ja", "zh"})
    for page in pages:
        html = (tmp_path / "site" / page.path.lstrip("/")).read_text(encoding="utf-8")
        assert f'<html lang="{page.lang}">' in html
        alts = [alt for _, alt in page.images if alt]
        assert Counter(identify.identify(alts)).most_common(1)[0][0] == page.lang, alts
    with pytest.raises(SystemExit):
        web.main([str(tmp_path / "x"), "--base-url", "http://web:8000", "--wat", str(tmp_path / "x.wat.gz"),
                  "--languages", "en,ko"])


@pytest.mark.parametrize("lang", ["ja", "zh"])
def test_the_generated_dump_gives_a_list_of_its_colours_and_shapes(tmp_path, capsys, lang):
    dump, views = write_wiki(lang, tmp_path / "inputs")
    assert write_wiki(lang, tmp_path / "inputs") == (dump, views)
    mtime = dump.stat().st_mtime_ns
    write_wiki(lang, tmp_path / "inputs")
    assert dump.stat().st_mtime_ns == mtime   # unchanged bytes are not rewritten
    done = wit_in_process(capsys, "build-queries", "--lang", lang, "--wiki-dump", dump, "--pageviews", views,
                          "--min-pmi", "5", "--workers", "1", "--out", tmp_path / "q")
    assert done.returncode == 0, done.stderr
    entries = json.loads((tmp_path / "q" / "metadata.json").read_text())
    colours, shapes, _ = TITLES[lang]
    assert set(colours + shapes) <= set(entries)   # the most viewed titles
    assert not any("画像説明" in e for e in entries)   # the File: caption, hidden by the dump's own namespace name
    # the demo's captions in that language match its list (MetaCLIP 2: no spaces around CJK entries)
    rng = random.Random(5)
    captions = [sample_scene(rng, lang=lang).caption for _ in range(200)]
    cjk = [e for e in entries if e in colours + shapes and not re.search(r"[\u3040-\u30ff]", e)]
    assert sum(any(e in c for e in cjk) for c in captions) >= 0.9 * len(captions)
