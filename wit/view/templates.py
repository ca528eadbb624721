"""The pages' Jinja templates and stylesheet, kept in the package as strings (no data files
to install). Autoescape is on for all of them (wit.view.app) and nothing is marked safe:
every caption, json value and name is text. No script, no inline style (the
Content-Security-Policy allows neither)."""

from __future__ import annotations

_BASE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{% block title %}{% endblock %} · wit view</title>
<link rel="stylesheet" href="{{ url_for('style') }}">
</head>
<body>
<header>
<nav class="top">
<a class="brand" href="{{ url_for('home') }}">wit view</a>
<a href="{{ url_for('samples') }}">samples</a>
<a href="{{ url_for('languages') }}">languages</a>
<a href="{{ url_for('queries') }}">queries</a>
<a href="{{ url_for('datacard') }}">data card</a>
<a href="{{ url_for('search') }}">search</a>
{% if view.filters %}<a href="{{ url_for('removed') }}">removed</a>
<a href="{{ url_for('filter_datacard') }}">filter data card</a>{% endif %}
</nav>
<form class="find" action="{{ url_for('search') }}" method="get">
<input type="search" name="caption" placeholder="caption words" maxlength="500" aria-label="caption words">
<button type="submit">find</button>
</form>
</header>
<main>
{% block main %}{% endblock %}
</main>
</body>
</html>
"""

_MACROS = """
{% macro grid(rows) %}
<ul class="grid">
{% for row in rows %}
<li class="card{% if row.removal %} removed{% endif %}" data-uid="{{ row.uid }}">
<a href="{{ url_for('sample', uid=row.uid) }}"><img src="{{ url_for('thumb', uid=row.uid) }}" alt="image of sample {{ row.uid }}" loading="lazy"></a>
<p class="caption">{{ row.caption }}</p>
<p class="meta"><a href="{{ url_for('sample', uid=row.uid) }}">{{ row.uid }}</a>
{%- if row.lang %} · {{ row.lang }}{% endif %}
{%- if row.width %} · {{ row.width }}×{{ row.height }}{% endif %}
{%- if row.score is defined %} · <span class="score">cosine {{ '%.4f' % row.score }}</span>{% endif %}
{%- if row.removal %} · <span class="flag">removed: {{ row.removal.filter }} ({{ row.removal.reason }})</span>{% endif %}</p>
</li>
{% else %}
<li class="empty">no samples</li>
{% endfor %}
</ul>
{% endmacro %}

{% macro pager(page) %}
<nav class="pager">
<a href="{{ page_url() }}">first</a>
{% if page.before is not none %}<a rel="prev" href="{{ page_url(before=page.before) }}">previous</a>{% else %}<span class="off">previous</span>{% endif %}
{% if page.after is not none %}<a rel="next" href="{{ page_url(after=page.after) }}">next</a>{% else %}<span class="off">next</span>{% endif %}
</nav>
{% endmacro %}

{% macro value(v) %}
{%- if v is mapping -%}
<table class="fields">
{% for k, item in v.items() %}<tr><th>{{ k }}</th><td>{{ value(item) }}</td></tr>
{% endfor %}</table>
{%- elif v is string -%}{{ v }}
{%- elif v is sequence -%}
{%- if v|length > 40 %}{{ v[:40]|join(', ') }}, … ({{ v|length }} in all){% else %}{% for item in v %}{{ value(item) }}{% if not loop.last %}, {% endif %}{% endfor %}{% endif -%}
{%- elif v is none -%}—
{%- else -%}{{ v }}
{%- endif -%}
{% endmacro %}

{% macro query_link(lang, query_id) -%}
<a href="{{ url_for('query', lang=lang_url(lang), query_id=query_id) }}">{% if names(lang, query_id) is not none %}{{ names(lang, query_id) }}{% else %}query {{ query_id }}{% endif %}{% if lang %} ({{ lang }}){% endif %}</a>
{%- endmacro %}

{% macro match(resolved) %}
{% if resolved.kind == 'sample' %}
<figure class="match"><a href="{{ url_for('sample', uid=resolved.sample.uid) }}"><img src="{{ url_for('thumb', uid=resolved.sample.uid) }}" alt="kept twin {{ resolved.sample.uid }}"></a>
<figcaption>kept twin: <a class="twin" href="{{ url_for('sample', uid=resolved.sample.uid) }}">{{ resolved.sample.uid }}</a><br>{{ resolved.sample.caption }}</figcaption></figure>
{% elif resolved.kind == 'eval' %}
<figure class="match"><img class="evalimage" src="{{ resolved.url }}" alt="evaluation image {{ resolved.name }}:{{ resolved.index }}">
<figcaption>evaluation image {{ resolved.index }} of {{ resolved.name }} ({{ resolved.path }})</figcaption></figure>
{% elif resolved.text %}<p class="match">matched: {{ resolved.text }}</p>
{% endif %}
{% endmacro %}
"""

_HOME = """{% extends "base.html" %}{% from "macros.html" import query_link %}
{% block title %}{{ view.shards.root }}{% endblock %}
{% block main %}
<h1>{{ view.shards.root }}</h1>
<table class="fields">
<tr><th>samples</th><td>{{ '{:,}'.format(totals.samples) }}</td></tr>
<tr><th>shards</th><td>{{ '{:,}'.format(totals.shards) }}</td></tr>
<tr><th>queries with samples</th><td>{{ '{:,}'.format(totals.queries) }}</td></tr>
<tr><th>languages</th><td>{{ totals.languages }}</td></tr>
<tr><th>query names</th><td>{{ names.source or 'unknown (give --queries)' }}</td></tr>
{% if view.embedded %}<tr><th>embeddings</th><td>{{ view.embedded.root }} ({{ view.embedded.summary.model }}, dim {{ view.embedded.summary.dim }})</td></tr>{% endif %}
{% if view.filtered %}<tr><th>filtered</th><td>{{ view.filtered.root }}</td></tr>{% endif %}
</table>
<ul class="links">
<li><a href="{{ url_for('samples') }}">browse all samples</a></li>
<li><a href="{{ url_for('queries') }}">browse by query</a></li>
<li><a href="{{ url_for('languages') }}">browse by language</a></li>
<li><a href="{{ url_for('datacard') }}">data card</a></li>
<li><a href="{{ url_for('search') }}">search</a></li>
{% if removed is not none %}<li><a href="{{ url_for('removed') }}">what the filter removed</a></li>{% endif %}
</ul>
{% if languages %}<h2>Languages</h2>
<ul class="counts">{% for l in languages %}<li><a href="{{ url_for('language', lang=lang_url(l.lang)) }}">{{ lang_name(l.lang) }}</a> {{ '{:,}'.format(l.n) }}</li>{% endfor %}</ul>{% endif %}
{% for note in view.notes %}<p class="note">{{ note }}</p>{% endfor %}
{% endblock %}
"""

_ERROR = """{% extends "base.html" %}
{% block title %}{{ code }} {{ name }}{% endblock %}
{% block main %}<h1>{{ code }} {{ name }}</h1><p><a href="{{ url_for('home') }}">home</a></p>{% endblock %}
"""

_DATACARD = """{% extends "base.html" %}{% from "macros.html" import value, query_link %}
{% block title %}data card{% endblock %}
{% block main %}
<h1>{{ title }}</h1>
{% if card is none %}<p>{{ source }} has no datacard.json.</p>{% else %}
{% for name, url in plots %}<figure class="plot"><img src="{{ url }}" alt="{{ name }}"><figcaption>{{ name }}</figcaption></figure>{% endfor %}
{{ value(card.fields) }}
{% if card.per_query %}
<h2>Queries with the most samples ({{ card.per_query.rows|length }} of {{ '{:,}'.format(card.per_query.total) }})</h2>
<table class="list"><tr>{% for c in card.per_query.columns %}<th>{{ c }}</th>{% endfor %}<th>query</th></tr>
{% for row in card.per_query.rows %}<tr>{% for c in card.per_query.columns %}<td>{{ row[c] }}</td>{% endfor %}
<td>{{ query_link(row.lang or '', row.query_id) }}</td></tr>
{% endfor %}</table>
{% endif %}{% endif %}
{% endblock %}
"""

_SAMPLES = """{% extends "base.html" %}{% from "macros.html" import grid, pager %}
{% block title %}{{ title }}{% endblock %}
{% block main %}
<h1>{{ title }}</h1>
{% if query_text is not none %}<p class="query">query text: <q>{{ query_text }}</q></p>{% endif %}
<p>{{ '{:,}'.format(total) }} samples</p>
{{ pager(page) }}
{{ grid(page.rows) }}
{{ pager(page) }}
{% endblock %}
"""

_LANGUAGES = """{% extends "base.html" %}
{% block title %}languages{% endblock %}
{% block main %}
<h1>Languages</h1>
<table class="list"><tr><th>language</th><th>samples</th></tr>
{% for l in languages %}<tr><td><a href="{{ url_for('language', lang=lang_url(l.lang)) }}">{{ lang_name(l.lang) }}</a></td><td>{{ '{:,}'.format(l.n) }}</td></tr>
{% endfor %}</table>
{% endblock %}
"""

_QUERIES = """{% extends "base.html" %}{% from "macros.html" import query_link %}
{% block title %}queries{% endblock %}
{% block main %}
<h1>Queries{% if lang %} in {{ lang }}{% endif %}, by samples</h1>
<table class="list"><tr><th>#</th><th>query</th><th>id</th><th>samples</th></tr>
{% for q in rows %}<tr><td>{{ number * per_page + loop.index }}</td><td>{{ query_link(q.lang, q.query_id) }}</td><td>{{ q.query_id }}</td><td>{{ '{:,}'.format(q.n) }}</td></tr>
{% endfor %}</table>
<nav class="pager">
{% if number > 0 %}<a rel="prev" href="{{ url_for('queries', page=number - 1, lang=lang) }}">previous</a>{% endif %}
{% if more %}<a rel="next" href="{{ url_for('queries', page=number + 1, lang=lang) }}">next</a>{% endif %}
</nav>
{% endblock %}
"""

_SAMPLE = """{% extends "base.html" %}{% from "macros.html" import query_link, match %}
{% block title %}sample {{ row.uid }}{% endblock %}
{% block main %}
<h1>Sample {{ row.uid }}</h1>
<div class="sample">
<figure class="large"><img src="{{ url_for('image', uid=row.uid) }}" alt="image of sample {{ row.uid }}"></figure>
<div>
<h2>Text</h2>
<p class="fulltext">{{ text }}</p>
{% if similar %}<p><a class="similar" href="{{ url_for('similar', uid=row.uid) }}">more like this image</a></p>{% endif %}
<h2>Where</h2>
<table class="fields">
<tr><th>shard</th><td>{{ shard }} (sample {{ row.id }} of the dir)</td></tr>
<tr><th>language</th><td>{% if row.lang %}<a href="{{ url_for('language', lang=row.lang) }}">{{ row.lang }}</a>{% else %}—{% endif %}</td></tr>
<tr><th>queries</th><td>{% for lang, q in queries %}{{ query_link(lang, q) }}{% if not loop.last %}, {% endif %}{% else %}—{% endfor %}</td></tr>
</table>
{% if removal %}
<h2>Removed</h2>
<table class="fields removal">
<tr><th>filter</th><td><a href="{{ url_for('removed_list', filter_=removal.filter, reason=removal.reason) }}">{{ removal.filter }}</a></td></tr>
<tr><th>reason</th><td>{{ removal.reason }}</td></tr>
<tr><th>match</th><td>{{ removal.match if removal.match is not none else '—' }}</td></tr>
<tr><th>value</th><td>{{ removal.value if removal.value is not none else '—' }}</td></tr>
</table>
{{ match(removal.resolved) }}
{% elif view.filters %}<p class="kept">kept by the filter</p>{% endif %}
{% if twins %}
<h2>Removed as its twins</h2>
<ul class="grid">{% for t in twins %}<li class="card twin" data-uid="{{ t.sample.uid }}"><a href="{{ url_for('sample', uid=t.sample.uid) }}"><img src="{{ url_for('thumb', uid=t.sample.uid) }}" alt="removed twin {{ t.sample.uid }}"></a><p class="meta">{{ t.filter }} ({{ t.reason }})</p></li>{% endfor %}</ul>
{% endif %}
{% if annotations %}
<h2>Annotations</h2>
<table class="fields annotations">{% for k, v in annotations %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
{% endif %}
<h2>json</h2>
{% if meta is none %}<p>unreadable json</p>{% else %}
<table class="fields json">{% for k, v in meta %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>{% endif %}
</div>
</div>
{% endblock %}
"""

_SEARCH = """{% extends "base.html" %}{% from "macros.html" import grid, pager %}
{% block title %}search{% endblock %}
{% block main %}
<h1>Search</h1>
<form action="{{ url_for('search') }}" method="get" class="search">
<label>images matching a text (the EMBED dir's model)
<input type="search" name="text" value="{{ text }}" maxlength="500"{% if not view.encoder %} disabled{% endif %}></label>
<button type="submit"{% if not view.encoder %} disabled{% endif %}>search images</button>
</form>
{% if not view.encoder %}<p class="note">Text search needs --embeddings and --checkpoint.</p>{% endif %}
<form action="{{ url_for('search') }}" method="get" class="search">
<label>captions containing the words
<input type="search" name="caption" value="{{ caption }}" maxlength="500"></label>
<button type="submit">search captions</button>
</form>
{% if problem %}<p class="note">{{ problem }}</p>{% endif %}
{% if results is not none %}<h2>Nearest images to <q>{{ text }}</q></h2>{{ grid(results) }}{% endif %}
{% if page is not none %}<h2>Captions with <q>{{ caption }}</q></h2>{{ pager(page) }}{{ grid(page.rows) }}{{ pager(page) }}{% endif %}
{% endblock %}
"""

_SIMILAR = """{% extends "base.html" %}{% from "macros.html" import grid %}
{% block title %}like {{ row.uid }}{% endblock %}
{% block main %}
<h1>More like <a href="{{ url_for('sample', uid=row.uid) }}">{{ row.uid }}</a></h1>
<p class="caption">{{ row.caption }}</p>
{{ grid(results) }}
{% endblock %}
"""

_REMOVED = """{% extends "base.html" %}
{% block title %}removed{% endblock %}
{% block main %}
<h1>What {{ filtered.root }} removed</h1>
<table class="list"><tr><th>filter</th><th>reason</th><th>samples</th></tr>
{% for c in counts %}<tr><td>{{ c.filter }}</td><td><a href="{{ url_for('removed_list', filter_=c.filter, reason=c.reason) }}">{{ c.reason }}</a></td><td>{{ '{:,}'.format(c.n) }}</td></tr>
{% else %}<tr><td colspan="3">nothing removed</td></tr>{% endfor %}</table>
{% for name, problem in problems.items() %}<p class="note">evaluation set {{ name }}: {{ problem }}</p>{% endfor %}
{% endblock %}
"""

_REMOVED_LIST = """{% extends "base.html" %}{% from "macros.html" import pager, match %}
{% block title %}removed: {{ filter_ }} {{ reason }}{% endblock %}
{% block main %}
<h1>Removed by {{ filter_ }} ({{ reason }})</h1>
<p>{{ '{:,}'.format(total) }} samples</p>
{{ pager(page) }}
<ul class="pairs">
{% for row in rows %}
<li class="pair" data-uid="{{ row.uid }}">
<figure><a href="{{ url_for('sample', uid=row.uid) }}"><img src="{{ url_for('thumb', uid=row.uid) }}" alt="removed sample {{ row.uid }}"></a>
<figcaption><a href="{{ url_for('sample', uid=row.uid) }}">{{ row.uid }}</a><br>{{ row.caption }}{% if row.removal.value is not none %}<br>value {{ row.removal.value }}{% endif %}</figcaption></figure>
{{ match(row.removal.resolved) }}
</li>
{% endfor %}
</ul>
{{ pager(page) }}
{% endblock %}
"""

TEMPLATES = {"base.html": _BASE, "macros.html": _MACROS, "home.html": _HOME, "error.html": _ERROR,
             "datacard.html": _DATACARD, "samples.html": _SAMPLES, "languages.html": _LANGUAGES,
             "queries.html": _QUERIES, "sample.html": _SAMPLE, "search.html": _SEARCH, "similar.html": _SIMILAR,
             "removed.html": _REMOVED, "removed_list.html": _REMOVED_LIST}

CSS = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; }
header { display: flex; flex-wrap: wrap; justify-content: space-between; align-items: center; gap: 8px;
         padding: 8px 16px; background: #20232a; }
header a { color: #e8e8e8; text-decoration: none; margin-right: 14px; }
header a.brand { font-weight: bold; color: #fff; }
main { padding: 12px 16px 40px; }
h1 { font-size: 1.4em; overflow-wrap: anywhere; }
h2 { font-size: 1.1em; margin-top: 1.4em; }
table.fields, table.list { border-collapse: collapse; margin: 6px 0; }
table.fields th, table.fields td, table.list th, table.list td { border: 1px solid #ddd; padding: 3px 8px;
    text-align: left; vertical-align: top; overflow-wrap: anywhere; }
table.fields th { background: #f0f0f0; font-weight: 600; }
ul.grid { list-style: none; padding: 0; display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr));
          gap: 12px; }
li.card { background: #fff; border: 1px solid #ddd; border-radius: 4px; padding: 6px; }
li.card.removed { border-color: #c33; }
li.card img, ul.pairs img, figure.match img { max-width: 100%; height: auto; display: block; }
p.caption { margin: 4px 0; white-space: pre-wrap; overflow-wrap: anywhere; max-height: 12em; overflow: auto; }
p.meta { margin: 2px 0; font-size: 0.85em; color: #555; overflow-wrap: anywhere; }
span.flag { color: #b00; }
nav.pager { margin: 10px 0; }
nav.pager a, nav.pager span { margin-right: 14px; }
nav.pager span.off { color: #aaa; }
div.sample { display: grid; grid-template-columns: minmax(200px, 1fr) 2fr; gap: 20px; }
figure.large img { max-width: 100%; height: auto; }
p.fulltext { white-space: pre-wrap; overflow-wrap: anywhere; background: #fff; border: 1px solid #ddd; padding: 8px; }
ul.pairs { list-style: none; padding: 0; }
li.pair { display: grid; grid-template-columns: 260px 260px; gap: 16px; padding: 8px 0; border-bottom: 1px solid #ddd; }
li.pair figure, figure.match { margin: 0; max-width: 260px; }
figcaption { overflow-wrap: anywhere; font-size: 0.9em; }
figure.plot img { max-width: 100%; }
p.note { color: #8a5a00; }
form.search label { display: block; margin: 10px 0 4px; }
form.search input { width: 28em; max-width: 90%; }
ul.counts { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 12px; }
"""
