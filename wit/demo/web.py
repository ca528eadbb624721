"""The demo web: HTML pages whose <img> tags carry alt texts describing procedurally drawn
images (wit.demo.world), served from 127.0.0.1, and the same pages as a Common
Crawl-style WAT file, the candidate pool of the demo crawl.

Like a real crawl, some images have no alt text and a few links are broken."""

from __future__ import annotations

import argparse
import functools
import html
import random
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Sequence

from wit.formats.atomic import atomic_path
from wit.demo import world
from wit.demo.wat import WatImage, WatPage, html_envelope, write_wat


@dataclass(frozen=True)
class Page:
    path: str                                   # /p/0001.html
    title: str
    images: tuple[tuple[str, str | None], ...]  # (src, alt) in page order
    lang: str = "en"


TITLES = {"en": "Shapes and colours, page {}", "ja": "色と形 {}ページ目", "zh": "形状和颜色 第{}页"}
INTROS = {"en": "Pictures of shapes in colours.", "ja": "色のついた図形の絵です。", "zh": "彩色图形的图片。"}


def build_site(out: Path, pages: int, images_per_page: int, seed: int, image_size: int = 96,
               held_out: set[str] | None = None, languages: Sequence[str] = ("en",)) -> list[Page]:
    """Write `out/index.html`, `out/p/NNNN.html` and `out/img/NNNNNN.jpg`; return the pages.
    Page N is written in `languages[N % len(languages)]`, its alt texts too. Scenes of the
    `held_out` classes never appear (they are described only in words in the evaluation).
    About 1 image in 12 has no alt text and 1 in 40 links to a missing file."""
    rng = random.Random(f"wit.demo.web:{seed}")
    (out / "p").mkdir(parents=True, exist_ok=True)
    (out / "img").mkdir(exist_ok=True)
    excluded = sorted(held_out or ())
    site, n = [], 0
    for p in range(pages):
        images, lang = [], languages[p % len(languages)]
        for _ in range(images_per_page):
            scene = world.sample_scene(rng, exclude=excluded, lang=lang)
            src = f"/img/{n:06d}.jpg"
            if rng.random() < 1 / 40:
                src = f"/img/missing-{n:06d}.jpg"
            else:
                _write(out / src.lstrip("/"), world.jpeg(world.render(scene, image_size)))
            images.append((src, None if rng.random() < 1 / 12 else scene.caption))
            n += 1
        page = Page(f"/p/{p:04d}.html", TITLES[lang].format(p + 1), tuple(images), lang)
        _write(out / page.path.lstrip("/"), _page_html(page).encode())
        site.append(page)
    links = "".join(f'<li><a href="{pg.path}">{html.escape(pg.title)}</a></li>' for pg in site)
    _write(out / "index.html", f'<!doctype html><meta charset="utf-8"><title>Demo web</title><ul>{links}</ul>'.encode())
    return site


def _page_html(page: Page) -> str:
    figures = "".join(f'<figure><img src="{src}"{_alt(alt)}></figure>' for src, alt in page.images)
    return (f'<!doctype html><html lang="{page.lang}"><head><meta charset="utf-8">'
            f"<title>{html.escape(page.title)}</title></head>"
            f"<body><h1>{html.escape(page.title)}</h1><p>{INTROS[page.lang]}</p>{figures}"
            f'<p><a href="/index.html">All pages</a></p></body></html>')


def _alt(alt: str | None) -> str:
    return "" if alt is None else f' alt="{html.escape(alt)}"'


def _write(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def write_site_wat(pages: list[Page], base_url: str, path: Path) -> Path:
    """The pages as WAT records of `base_url` (img src kept relative, as in the HTML)."""
    records = ((base_url + page.path,
                html_envelope(WatPage(base_url + page.path, [WatImage(src, alt) for src, alt in page.images],
                                      other_links=[("A@/href", "/index.html")]), page.title))
               for page in pages)
    return write_wat(path, records, "the demo web")


@contextmanager
def serve(directory: Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `directory` over HTTP in a background thread; yield the base url."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer((host, port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


def main(argv: list[str] | None = None) -> None:
    """Write the demo site into OUT (for a web server to serve) and its WAT file for the
    site's base url, e.g. the docker-compose `web` service at http://web:8000."""
    parser = argparse.ArgumentParser(prog="python -m wit.demo.web", description=main.__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the site's directory (./web for docker-compose)")
    parser.add_argument("--base-url", required=True, help="where the site will be served, e.g. http://web:8000")
    parser.add_argument("--wat", type=Path, required=True, help="the WAT file to write")
    parser.add_argument("--pages", type=int, default=400)
    parser.add_argument("--images-per-page", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--languages", default="en", help="the pages' languages, comma-separated: en, ja, zh")
    args = parser.parse_args(argv)
    languages = [lang.strip() for lang in args.languages.split(",") if lang.strip()]
    unknown = sorted(set(languages) - set(world.LANGUAGES))
    if unknown or not languages:
        parser.error(f"--languages: the demo world speaks {', '.join(world.LANGUAGES)}, not {', '.join(unknown) or 'none'}")
    pages = build_site(args.out, args.pages, args.images_per_page, args.seed, languages=languages)
    print(write_site_wat(pages, args.base_url.rstrip("/"), args.wat))


if __name__ == "__main__":
    main()
