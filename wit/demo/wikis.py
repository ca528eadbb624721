"""Small Wikipedia exports in Japanese and Chinese for the demo's worldwide query list: a
`pages-articles` XML file with the wiki's own namespace names in `<siteinfo>` (so
`ファイル:` and `Category:` links are hidden by the names the dump declares), articles about
the demo world's colours and shapes and about unrelated things, and an hourly page-view
file of that wiki (with lines of other wikis, which do not count).

`wit build-queries --lang ja|zh` reads them as it reads a real dump: words segmented
(fugashi for ja, jieba for zh), bigrams joined without a space, MetaCLIP 2's caps."""

from __future__ import annotations

import gzip
import hashlib
import random
from pathlib import Path
from xml.sax.saxutils import escape

from wit.demo.phrases import JA_COLOURS, JA_SHAPES, ZH_COLOURS, ZH_SHAPES
from wit.formats.atomic import atomic_path

NAMESPACES = {
    "ja": {-2: "メディア", 1: "ノート", 6: "ファイル", 10: "Template", 14: "Category"},
    "zh": {-2: "Media", 1: "Talk", 6: "File", 10: "Template", 14: "Category"},
}
# Article titles: the world's colour and shape nouns, then other subjects.
TITLES = {
    "ja": (["赤", "オレンジ", "黄色", "緑", "青", "紫", "黒"], list(JA_SHAPES.values()),
           ["東京", "富士山", "猫", "犬", "桜", "寿司", "電車", "図書館", "音楽", "数学"]),
    "zh": (["红色", "橙色", "黄色", "绿色", "蓝色", "紫色", "黑色"], list(ZH_SHAPES.values()),
           ["北京", "长城", "熊猫", "茶", "汉字", "饺子", "火车", "图书馆", "音乐", "数学"]),
}
SENTENCES = {   # {c}: a colour as it stands before a noun, {s}: a shape, {t}: the title
    "ja": ["{t}は多くの本で説明されています。", "{c}{s}は絵によく描かれます。", "子どもは{c}{s}を描きました。",
           "この図には{c}{s}が二つあります。", "{t}について多くの研究があります。", "{c}{s}の写真が展示されました。",
           "昔から{t}は人々に知られています。", "{s}と{c}旗が使われています。"],
    "zh": ["{t}在许多书中都有介绍。", "{c}{s}经常出现在图画中。", "孩子们画了一个{c}{s}。",
           "这幅图中有两个{c}{s}。", "关于{t}有很多研究。", "展览中有{c}{s}的照片。",
           "人们很早就知道{t}。", "{s}和{c}旗帜被广泛使用。"],
}
COLOURS = {"ja": JA_COLOURS, "zh": ZH_COLOURS}


def write_wiki(lang: str, out: Path, pages_per_title: int = 1, seed: int = 0) -> tuple[Path, Path]:
    """Write OUT/{lang}wiki-demo-pages-articles.xml and OUT/pageviews-{lang}-demo.gz; return
    both paths. Files whose bytes would not change are left alone (so `wit build-queries`
    reuses its list)."""
    if lang not in TITLES:
        raise ValueError(f"demo wikis exist for {', '.join(TITLES)}, not {lang!r}")
    rng = random.Random(f"wit.demo.wikis:{lang}:{seed}")
    colours, shapes, others = TITLES[lang]
    adjectives, shape_words = list(COLOURS[lang].values()), list(shapes)
    pages = []
    for title in colours + shapes + others:
        for n in range(pages_per_title):
            lines = [rng.choice(SENTENCES[lang]).format(t=title, c=rng.choice(adjectives), s=rng.choice(shape_words))
                     for _ in range(rng.randint(6, 12))]
            if n == 0:
                lines.append(f"[[{NAMESPACES[lang][6]}:{title}.jpg|thumb|画像説明 {title}]] "
                             f"[[Category:{title}]]")
            pages.append(((title if n == 0 else f"{title} ({n + 1})"), "\n".join(lines)))
    out.mkdir(parents=True, exist_ok=True)
    dump = _write_if_changed(out / f"{lang}wiki-demo-pages-articles.xml", _export(lang, pages).encode())
    views, subjects = [], set(colours + shapes)
    for title, _ in pages:   # the colours and shapes are the most viewed
        count = (100 if title in subjects else 10) + int(hashlib.sha256(title.encode()).hexdigest()[:4], 16) % 80
        views += [f"{lang} {title.replace(' ', '_')} {count} 0", f"{lang}.m {title.replace(' ', '_')} {count // 2} 0",
                  f"en {title.replace(' ', '_')} {count * 5} 0"]   # another wiki: not counted
    pageviews = _write_if_changed(out / f"pageviews-{lang}-demo.gz",
                                  gzip.compress(("\n".join(views) + "\n").encode(), mtime=0))
    return dump, pageviews


def export_header(lang: str, namespaces: dict[int, str]) -> str:
    """The start of a MediaWiki export of `lang`'s wiki, its namespace names in `<siteinfo>`."""
    names = "".join(f'      <namespace key="{key}" case="first-letter">{escape(name)}</namespace>\n'
                    for key, name in namespaces.items())
    return (f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="{lang}">\n'
            f"  <siteinfo>\n    <sitename>Wikipedia</sitename>\n    <dbname>{lang}wiki</dbname>\n"
            f"    <namespaces>\n{names}    </namespaces>\n  </siteinfo>\n")


def export_page(title: str, text: str, page_id: int, ns: int = 0, redirect: str | None = None) -> str:
    """One `<page>` of a MediaWiki export."""
    moved = f'    <redirect title="{escape(redirect)}" />\n' if redirect else ""
    return (f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n"
            f"    <id>{page_id}</id>\n{moved}    <revision>\n      <id>{page_id + 1000}</id>\n"
            f'      <text xml:space="preserve">{escape(text)}</text>\n    </revision>\n  </page>\n')


EXPORT_FOOTER = "</mediawiki>\n"


def _export(lang: str, pages: list[tuple[str, str]]) -> str:
    body = "".join(export_page(title, text, i) for i, (title, text) in enumerate(pages, 1))
    return export_header(lang, NAMESPACES[lang]) + body + EXPORT_FOOTER


def _write_if_changed(path: Path, data: bytes) -> Path:
    if not path.exists() or path.read_bytes() != data:
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(data)
    return path
