"""Wikitext to plain text.

Removes templates, tables, references and other non-prose elements, HTML comments and
tags, file/image/category and interlanguage links, magic words, headings' and lists'
markup, bold/italic quotes and external link targets; keeps the visible text of links.
Regular expressions and linear brace scans, so a page is cleaned in one pass per
construct (mwparserfromhell builds a full parse tree and is several times slower).
"""

from __future__ import annotations

import html
import re

_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
# Elements whose content is not prose: dropped with their content.
_DROPPED_ELEMENTS = (
    "ref", "references", "math", "chem", "ce", "code", "source", "syntaxhighlight", "pre",
    "gallery", "timeline", "imagemap", "score", "hiero", "graph", "mapframe", "maplink",
    "templatedata", "inputbox", "categorytree", "noinclude", "includeonly",
)
_DROPPED = re.compile(
    r"<(%s)\b[^>]*?(?<!/)>.*?</\1\s*>" % "|".join(_DROPPED_ELEMENTS), re.S | re.I
)
_PARAMETER = re.compile(r"\{\{\{[^{}]*\}\}\}")  # {{{name|default}}}: template parameters
_TEMPLATE_BRACES = re.compile(r"\{\{|\}\}")
_TABLE_MARKS = re.compile(r"^[ \t]*(\{\||\|\})", re.M)
_INNER_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_EXTERNAL_LINK = re.compile(r"\[(?:https?:|ftp:|//)[^\s\]]*\s*([^\]]*)\]", re.I)
# Case spelled out: re.IGNORECASE makes this scan several times slower.
_BARE_URL = re.compile(r"(?:[hH][tT][tT][pP][sS]?|[fF][tT][pP])://[^\s<>\]|]+")
_HEADING = re.compile(r"^(=+)[ \t]*(.*?)[ \t]*\1[ \t]*$", re.M)
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_LINE_MARKUP = re.compile(r"^(?:[*#:;]+[ \t]*|-{4,})", re.M)
_PARENTHETICAL = re.compile(r"\s*\([^()]*\)$")
# Namespaces whose links are not prose (English names; a dump's own come from its siteinfo,
# `wit.queries.dumps.hidden_namespaces`), and interlanguage prefixes like "de" or "zh-min-nan".
_HIDDEN_NAMESPACES = frozenset({"file", "image", "media", "category"})
_LANGUAGE_PREFIX = re.compile(r"[a-z]{2,3}(?:-[a-z]+)*")


def wikitext_to_text(wikitext: str, hidden: frozenset[str] = _HIDDEN_NAMESPACES) -> str:
    """Return the prose of a page's wikitext, one paragraph or list item per line; links
    into the namespaces `hidden` (lower-cased names) are dropped."""
    text = _COMMENT.sub("", wikitext)
    text = _DROPPED.sub("", text)
    if "{{{" in text:
        text = _PARAMETER.sub("", text)
    text = _drop_balanced(text, _TEMPLATE_BRACES, "{{")
    text = _drop_balanced(text, _TABLE_MARKS, "{|")
    text = _replace_links(text, hidden)
    text = _EXTERNAL_LINK.sub(r"\1", text)
    text = _BARE_URL.sub("", text)
    text = text.replace("'''", "").replace("''", "")  # bold, italic; 5 quotes are both
    text = _HEADING.sub(r"\2", text)
    text = _MAGIC_WORD.sub("", text)
    text = _TAG.sub("", text)
    text = _LINE_MARKUP.sub("", text)
    if "&" in text:
        text = html.unescape(text)
    return text


def _drop_balanced(text: str, marks: re.Pattern, opener: str) -> str:
    """Drop every outermost balanced opener...closer span; unmatched marks lose only themselves."""
    kept: list[str] = []
    depth = 0
    keep_from = 0
    open_at = 0
    for match in marks.finditer(text):
        if match.group().strip() == opener:
            if depth == 0:
                kept.append(text[keep_from:match.start()])
                open_at = match.end()
            depth += 1
        elif depth:
            depth -= 1
            if depth == 0:
                keep_from = match.end()
        else:  # a closer with no opener
            kept.append(text[keep_from:match.start()])
            keep_from = match.end()
    if depth:  # an opener never closed: keep what follows it rather than lose the page
        keep_from = open_at
    kept.append(text[keep_from:])
    return "".join(kept)


def _replace_links(text: str, hidden: frozenset[str]) -> str:
    """Replace internal links by their visible text, innermost first (captions nest links)."""
    while "[[" in text:
        replaced = _INNER_LINK.sub(lambda match: _link_text(match, hidden), text)
        if replaced == text:
            break
        text = replaced
    return text


def _link_text(match: re.Match, hidden: frozenset[str]) -> str:
    target, has_label, label = match.group(1).partition("|")
    target = target.strip()
    if target.startswith(":"):  # [[:Category:X]] is a visible link, not a categorisation
        target = target[1:]
    elif ":" in target:
        prefix = target.split(":", 1)[0].strip().lower()
        if prefix in hidden or _LANGUAGE_PREFIX.fullmatch(prefix):
            return ""
    if has_label:
        return label if label.strip() else _PARENTHETICAL.sub("", target)  # pipe trick
    return target.lstrip("#")
