"""The web page: a Flask app over the index, read-only and server-rendered.

Security: only GET and HEAD (anything else is 405 before routing); on a loopback address
only requests naming a loopback host (no DNS rebinding); every response with a strict
Content-Security-Policy (no script at all, images and the one stylesheet from this origin
only), nosniff, no framing, no referrer. Every text is escaped by Jinja's autoescape (on
for every template; nothing is marked safe). Nothing is served by path: samples by uid
and images by uid or (set, index) through the index, the data cards by fixed names; an
unknown uid or path is a 404.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field
from typing import Callable

from flask import Flask, Response, abort, render_template, request, url_for
from jinja2 import DictLoader
from werkzeug.exceptions import HTTPException

from wit.formats.crawl import MAX_SAMPLE_JSON_BYTES
from wit.formats.errors import WitError
from wit.formats.images import ImageRefused
from wit.formats.languages import LANGUAGE_CODE
from wit.formats.shards import open_regular
from wit.view.filtered import DECONTAMINATE, UID_MATCHES, EvalImages, FilterIndex, eval_match
from wit.view.images import LARGE, THUMBNAIL, read_at, resized_jpeg
from wit.view.index import Index, Page, fts_query, query_ids
from wit.view.sources import Embedded, Filtered, QueryNames, Shards
from wit.view.templates import CSS, TEMPLATES

CSP = ("default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
           "Referrer-Policy": "no-referrer", "Cross-Origin-Opener-Policy": "same-origin",
           "Cross-Origin-Resource-Policy": "same-origin"}
METHODS = ("GET", "HEAD")
MAX_TEXT = 500          # characters of a typed search text
MAX_PAGE_KEY = 1 << 62
RESULTS = 48            # nearest neighbours shown by a search
QUERIES_PER_PAGE = 100
MAX_QUERY_PAGE = MAX_PAGE_KEY // QUERIES_PER_PAGE   # an offset SQLite's 64-bit integers still hold
LISTING_ARGS = ("text", "caption", "lang")   # the arguments a paged listing keeps from page to page
NO_LANGUAGE = "-"       # the URL's name of "no language" (a single query list)
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class View:
    """Everything the pages read; built by wit.view.run."""
    shards: Shards
    index: Index
    names: QueryNames
    page_size: int = 48
    card: dict | None = None
    filtered: Filtered | None = None
    filters: FilterIndex | None = None
    filter_card: dict | None = None
    embedded: Embedded | None = None
    vectors: object | None = None          # wit.view.vectors.Vectors
    encoder: object | None = None          # wit.view.vectors.TextEncoder
    evals: EvalImages | None = None
    notes: list[str] = field(default_factory=list)


def create_app(view: View, host: str = "127.0.0.1") -> Flask:
    app = Flask("wit.view", static_folder=None, template_folder=None)
    app.jinja_loader = DictLoader(TEMPLATES)
    app.jinja_env.autoescape = True
    app.jinja_env.globals.update(page_url=_page_url, names=view.names, view=view, lang_name=_lang_name,
                                 lang_url=_lang_url, NO_LANGUAGE=NO_LANGUAGE)
    app.wsgi_app = _guard(app.wsgi_app, host)

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.update(HEADERS)
        if response.mimetype == "text/html":
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(HTTPException)
    def error(e: HTTPException):
        return render_template("error.html", code=e.code, name=e.name), e.code

    @app.get("/style.css")
    def style():
        return Response(CSS, mimetype="text/css", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/")
    def home():
        return render_template("home.html", totals=view.index.totals(), languages=view.index.languages()[:12],
                               removed=view.filters.counts() if view.filters else None)

    # ---- data cards
    @app.get("/datacard")
    def datacard():
        plots = [(name, url_for(endpoint)) for name, endpoint in (("datacard.png", "datacard_png"),
                                                                  ("languages.png", "languages_png"))
                 if os.path.isfile(os.path.join(view.shards.root, name))]
        return render_template("datacard.html", title=f"Data card of {view.shards.root}", card=card_view(view.card),
                               plots=plots, source=view.shards.root)

    @app.get("/filtered/datacard")
    def filter_datacard():
        if view.filtered is None:
            abort(404)
        return render_template("datacard.html", title=f"Data card of {view.filtered.root}",
                               card=card_view(view.filter_card),
                               plots=[("datacard.png", url_for("filter_png"))]
                               if os.path.isfile(os.path.join(view.filtered.root, "datacard.png")) else [],
                               source=view.filtered.root)

    @app.get("/datacard.png")
    def datacard_png():
        return _png(os.path.join(view.shards.root, "datacard.png"))

    @app.get("/languages.png")
    def languages_png():
        return _png(os.path.join(view.shards.root, "languages.png"))

    @app.get("/filtered/datacard.png")
    def filter_png():
        if view.filtered is None:
            abort(404)
        return _png(os.path.join(view.filtered.root, "datacard.png"))

    # ---- browsing
    @app.get("/samples")
    def samples():
        page = view.index.page("all", None, *_keys(), view.page_size)
        return _samples_page(view, "All samples", page, view.index.totals()["samples"])

    @app.get("/languages")
    def languages():
        return render_template("languages.html", languages=view.index.languages())

    @app.get("/languages/<lang>")
    def language(lang: str):
        code = _lang(lang)
        total = view.index.language_count(code)
        if total is None:
            abort(404)
        page = view.index.page("lang", code, *_keys(), view.page_size)
        return _samples_page(view, f"Samples in {_lang_name(code)}", page, total)

    @app.get("/queries")
    def queries():
        number = _int_arg("page", 0)
        if number > MAX_QUERY_PAGE:
            abort(400)
        lang = request.args.get("lang")
        code = None if lang is None else _lang(lang)
        rows = view.index.queries(number * QUERIES_PER_PAGE, QUERIES_PER_PAGE + 1, code)
        return render_template("queries.html", rows=rows[:QUERIES_PER_PAGE], number=number, lang=lang,
                               more=len(rows) > QUERIES_PER_PAGE, per_page=QUERIES_PER_PAGE)

    @app.get("/queries/<lang>/<int(max=2147483647):query_id>")
    def query(lang: str, query_id: int):
        code = _lang(lang)
        total = view.index.query_count(code, query_id)
        if total is None:
            abort(404)
        name = view.names(code, query_id)
        title = f"Query {query_id}" + (f" ({_lang_name(code)})" if code else "")
        page = view.index.page("query", (code, query_id), *_keys(), view.page_size)
        return _samples_page(view, title, page, total, query_text=name)

    # ---- one sample
    @app.get("/sample/<uid>")
    def sample(uid: str):
        row = _sample(view, uid)
        path = os.path.join(view.shards.root, view.index.shard_name(row["shard"]) or "")
        meta, text = _member_json(path, row), _member_text(path, row)
        queries = [(row["lang"], q) for q in query_ids(meta)]
        removal = twins = annotations = None
        if view.filters is not None:
            removal = view.filters.removal(row["id"])
            if removal:
                removal["resolved"] = _resolve(view, removal)
            annotations = _flatten(view.filters.annotations(row["id"]))
            removed = view.filters.removed_for(row["uid"])
            found = {s["id"]: s for s in view.index.samples([r["sample"] for r in removed])}
            twins = [dict(r, sample=found[r["sample"]]) for r in removed if r["sample"] in found]
        similar = view.vectors is not None and view.vectors.vector(row["id"]) is not None
        fields = None if meta is None else [(str(k), v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
                                            for k, v in meta.items()]
        return render_template("sample.html", row=row, text=text, meta=fields, queries=queries, removal=removal,
                               twins=twins, annotations=annotations, similar=similar, shard=os.path.basename(path))

    @app.get("/thumb/<uid>.jpg")
    def thumb(uid: str):
        return _image(view, _sample(view, uid), THUMBNAIL)

    @app.get("/image/<uid>.jpg")
    def image(uid: str):
        return _image(view, _sample(view, uid), LARGE)

    # ---- search
    @app.get("/search")
    def search():
        text = (request.args.get("text") or "").strip()[:MAX_TEXT]
        caption = (request.args.get("caption") or "").strip()[:MAX_TEXT]
        results, page, problem = None, None, None
        if text:
            if view.encoder is None:
                problem = "text search needs --embeddings and --checkpoint"
            else:
                found = view.vectors.nearest(view.encoder.encode(text), RESULTS)
                results = _scored(view, found)
        elif caption:
            fts = fts_query(caption)
            page = view.index.page("caption", fts, *_keys(), view.page_size) if fts else None
        return render_template("search.html", text=text, caption=caption, results=results, page=page,
                               problem=problem)

    @app.get("/similar/<uid>")
    def similar(uid: str):
        row = _sample(view, uid)
        vector = view.vectors.vector(row["id"]) if view.vectors is not None else None
        if vector is None:
            abort(404)
        return render_template("similar.html", row=row, results=_scored(view, view.vectors.nearest(vector, RESULTS)))

    # ---- what a filter removed
    @app.get("/removed")
    def removed():
        if view.filters is None:
            abort(404)
        return render_template("removed.html", counts=view.filters.counts(), filtered=view.filtered,
                               problems=view.evals.problems if view.evals else {})

    @app.get("/removed/<filter_>/<reason>")
    def removed_list(filter_: str, reason: str):
        if view.filters is None:
            abort(404)
        total = view.filters.count(filter_, reason)
        if total is None:
            abort(404)
        ids = view.filters.page(filter_, reason, *_keys(), view.page_size)
        rows = view.index.samples(ids.rows)
        removals = view.filters.removals(ids.rows)
        for row in rows:
            row["removal"] = removals.get(row["id"])
            if row["removal"]:
                row["removal"]["resolved"] = _resolve(view, row["removal"])
        return render_template("removed_list.html", filter_=filter_, reason=reason, total=total, rows=rows,
                               page=Page(rows, ids.after, ids.before))

    @app.get("/eval/<name>/<int(max=2147483647):index>.jpg")
    def eval_image(name: str, index: int):
        data = view.evals.thumbnail(name, index) if view.evals is not None else None
        if data is None:
            abort(404)
        return Response(data, mimetype="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    return app


# ---- request guard -----------------------------------------------------------------------------


def _guard(wsgi_app: Callable, host: str) -> Callable:
    """Refuse, before routing, any method but GET and HEAD (405), and, when serving on a
    loopback address, a Host header that names anything else (400: a DNS-rebinding page
    could otherwise read the data)."""
    loopback = is_loopback(host)

    def guarded(environ, start_response):
        if environ.get("REQUEST_METHOD") not in METHODS:
            return _plain(start_response, "405 Method Not Allowed", b"405 Method Not Allowed: wit view is read-only\n",
                          [("Allow", ", ".join(METHODS))])
        if loopback and not is_loopback(_hostname(environ.get("HTTP_HOST", ""))):
            return _plain(start_response, "400 Bad Request", b"400 Bad Request: unexpected Host header\n")
        return wsgi_app(environ, start_response)

    return guarded


def _plain(start_response, status: str, body: bytes, extra: list | None = None):
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                            *HEADERS.items(), *(extra or [])])
    return [body]


def _hostname(header: str) -> str:
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else ""
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---- helpers ---------------------------------------------------------------------------------


def _keys() -> tuple[int | None, int | None]:
    return _int_arg("after"), _int_arg("before")


def _int_arg(name: str, default: int | None = None) -> int | None:
    value = request.args.get(name)
    if value is None or value == "":
        return default
    if not value.isascii() or not value.isdigit() or int(value) > MAX_PAGE_KEY:
        abort(400)
    return int(value)


def _lang(value: str) -> str:
    if value == NO_LANGUAGE:
        return ""
    if not LANGUAGE_CODE.fullmatch(value):
        abort(404)
    return value


def _lang_name(code: str) -> str:
    return code or "no language"


def _lang_url(code: str) -> str:
    return code or NO_LANGUAGE


def _page_url(after: int | None = None, before: int | None = None) -> str:
    """This page's URL with its listing arguments kept and the page key replaced (any other
    argument is dropped: it could name a route's own argument, or `url_for`'s)."""
    args = {k: v for k, v in request.args.items() if k in LISTING_ARGS and k not in (request.view_args or {})}
    if after is not None:
        args["after"] = after
    if before is not None:
        args["before"] = before
    return url_for(request.endpoint, **(request.view_args or {}), **args)


def _sample(view: View, uid: str) -> dict:
    if len(uid) > 256:
        abort(404)
    row = view.index.sample(uid)
    if row is None:
        abort(404)
    return row


def _samples_page(view: View, title: str, page: Page, total: int, query_text: str | None = None):
    removals = view.filters.removals([r["id"] for r in page.rows]) if view.filters else {}
    for row in page.rows:
        row["removal"] = removals.get(row["id"])
    return render_template("samples.html", title=title, page=page, total=total, query_text=query_text)


def _scored(view: View, found: list[tuple[int, float]]) -> list[dict]:
    rows = view.index.samples([sample for sample, _ in found])
    scores = dict(found)
    for row in rows:
        row["score"] = scores[row["id"]]
    return rows


def _resolve(view: View, removal: dict) -> dict:
    """What a removed sample matched, ready to show: the kept twin (a sample), the
    evaluation image (its thumbnail's URL) or the match as text."""
    match = removal.get("match")
    if removal["filter"] in UID_MATCHES and match:
        twin = view.index.sample(match)
        if twin is not None:
            return {"kind": "sample", "sample": twin}
    if removal["filter"] == DECONTAMINATE:
        found = eval_match(match)
        if found and view.evals is not None and found[0] in view.evals.paths:
            return {"kind": "eval", "name": found[0], "index": found[1],
                    "url": url_for("eval_image", name=found[0], index=found[1]),
                    "path": view.evals.paths[found[0]]}
    return {"kind": "text", "text": match}


def _image(view: View, row: dict, side: int) -> Response:
    name = view.index.shard_name(row["shard"])
    if name is None or row["image_offset"] is None:
        abort(404)
    data = read_at(os.path.join(view.shards.root, name), row["image_offset"], row["image_size"])
    if data is None:
        abort(404)
    try:
        jpeg = resized_jpeg(data, side)
    except ImageRefused:
        abort(404)
    return Response(jpeg, mimetype="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


def _png(path: str) -> Response:
    try:
        with open_regular(path) as f:
            data = f.read(32 << 20)
    except (WitError, OSError):
        abort(404)
    if not data.startswith(PNG):
        abort(404)
    return Response(data, mimetype="image/png", headers={"Cache-Control": "private, max-age=3600"})


def _member_json(path: str, row: dict) -> dict | None:
    """The sample's json, or None when unreadable."""
    if row["json_size"] is None or row["json_size"] > MAX_SAMPLE_JSON_BYTES:
        return None
    data = read_at(path, row["json_offset"], row["json_size"])
    try:
        meta = json.loads(data) if data is not None else None
    except (ValueError, RecursionError):
        return None
    return meta if isinstance(meta, dict) else None


def _member_text(path: str, row: dict) -> str:
    if row["txt_size"] is None or row["txt_size"] > MAX_SAMPLE_JSON_BYTES:
        return row["caption"]
    data = read_at(path, row["txt_offset"], row["txt_size"]) if row["txt_size"] else b""
    return row["caption"] if data is None else data.decode("utf-8", "replace")


def _flatten(fields: dict, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for k, v in fields.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v if isinstance(v, str) else json.dumps(v)))
    return out


def card_view(card: dict | None) -> dict | None:
    """A data card for the page: its fields, with `per_query` (columns of equal length)
    turned into the rows of its largest queries."""
    if card is None:
        return None
    fields = {k: v for k, v in card.items() if k != "per_query"}
    per_query = card.get("per_query")
    table = None
    if isinstance(per_query, dict) and per_query and all(isinstance(v, list) for v in per_query.values()):
        columns = list(per_query)
        n = min(len(v) for v in per_query.values())
        rows = [{c: per_query[c][i] for c in columns} for i in range(n)]
        numeric = [c for c in columns if c not in ("lang", "query_id")]
        if numeric:
            rows.sort(key=lambda r: -(r[numeric[-1]] if isinstance(r[numeric[-1]], (int, float)) else 0))
        table = {"columns": columns, "rows": rows[:100], "total": n}
    return {"fields": fields, "per_query": table}

