"""search_docs: BM25 over the text files of a docs folder (bm25s does the ranking).

Files are split into passages of a few hundred words so a hit points at the relevant part of a
long document. The index is cached per folder and rebuilt only when a file's size or mtime
changes (or a file appears or goes), so repeated searches cost a directory walk and a lookup.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import bm25s  # type: ignore[import-untyped]

from dytopo.errors import ToolError
from dytopo.tools import ToolContext, tool

# bm25s sets its own logger to DEBUG at import; keep its chatter out of the run's log.
logging.getLogger("bm25s").setLevel(logging.WARNING)

EXTENSIONS = {".md", ".markdown", ".txt", ".rst"}
SKIP_DIRS = {"node_modules", "__pycache__", "site-packages", "venv"}
MAX_FILES = 2000
PASSAGE_WORDS = 200  # paragraphs are merged until a passage holds about this many words
MAX_PASSAGE_WORDS = 300  # a longer paragraph is cut into pieces of this size
MIN_PASSAGE_WORDS = 60  # a heading starts a new passage once the current one has this many
MAX_K = 10
CACHED_FOLDERS = 8
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r]*\n")

Signature = tuple[tuple[str, int, int], ...]  # (relative path, mtime_ns, size) per file


@dataclass(frozen=True)
class _Passage:
    source: str
    text: str


@dataclass(frozen=True)
class _Index:
    passages: list[_Passage]
    retriever: bm25s.BM25


_cache: OrderedDict[tuple[str, int], tuple[Signature, _Index]] = OrderedDict()
_lock = threading.Lock()  # sync tools run in worker threads


def _plural_stem(words: list[str]) -> list[str]:
    """Harman's S-stemmer: folds plurals ("caches" -> "cache", "policies" -> "policy").

    Conservative on purpose: a full stemmer would also merge unrelated words.
    """
    out = []
    for word in words:
        if len(word) <= 3 or not word.endswith("s") or word.endswith(("us", "ss")):
            out.append(word)
        elif word.endswith("ies") and not word.endswith(("eies", "aies")):
            out.append(word[:-3] + "y")
        else:
            out.append(word[:-1])
    return out


def _tokenize(texts: list[str]) -> list[list[str]]:
    tokens: list[list[str]] = bm25s.tokenize(
        texts, stopwords="en", stemmer=_plural_stem, return_ids=False, show_progress=False
    )
    return tokens


def _files(root: Path, max_bytes: int) -> list[tuple[str, Path, int, int]]:
    """(path relative to root, real path, mtime_ns, size) of every searchable file."""
    found: list[tuple[str, Path, int, int]] = []
    # followlinks=False: a linked folder is not entered; linked files are checked below.
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        for name in sorted(names):
            path = Path(folder, name)
            if path.suffix.lower() not in EXTENSIONS:
                continue
            try:
                real = path.resolve()
                info = real.stat()
            except (OSError, RuntimeError):
                continue
            if not real.is_relative_to(root):  # a symlink leading out of the docs folder
                continue
            if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
                continue
            # A name that is not UTF-8 is shown with \xNN escapes: a prompt cannot carry it raw.
            rel = os.fsencode(path.relative_to(root).as_posix()).decode("utf-8", "backslashreplace")
            found.append((rel, real, info.st_mtime_ns, info.st_size))
            if len(found) == MAX_FILES:
                return found
    return found


def _passages(source: str, text: str) -> list[_Passage]:
    parts: list[str] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        words = paragraph.split()
        if len(words) > MAX_PASSAGE_WORDS:
            step = MAX_PASSAGE_WORDS
            parts.extend(" ".join(words[i : i + step]) for i in range(0, len(words), step))
        elif words:
            parts.append(paragraph.strip())
    chunks: list[str] = []
    current: list[str] = []
    count = 0
    for part in parts:
        size = len(part.split())
        # A Markdown heading opens a passage rather than trailing at the end of one.
        heading_break = part.startswith("#") and count >= MIN_PASSAGE_WORDS
        if current and (count + size > PASSAGE_WORDS or heading_break):
            chunks.append("\n\n".join(current))
            current, count = [], 0
        current.append(part)
        count += size
    if current:
        chunks.append("\n\n".join(current))
    return [_Passage(source, chunk) for chunk in chunks]


def _build(files: list[tuple[str, Path, int, int]], max_bytes: int) -> _Index:
    passages: list[_Passage] = []
    for rel, real, _, _ in files:
        try:
            data = real.read_bytes()[:max_bytes]
        except OSError:
            continue
        if b"\x00" in data:  # binary despite its name
            continue
        passages.extend(_passages(rel, data.decode("utf-8", errors="replace")))
    retriever = bm25s.BM25()
    if passages:
        retriever.index(_tokenize([p.text for p in passages]), show_progress=False)
    return _Index(passages, retriever)


def _index(root: Path, max_bytes: int) -> _Index:
    files = _files(root, max_bytes)
    signature: Signature = tuple((rel, mtime, size) for rel, _, mtime, size in files)
    key = (str(root), max_bytes)
    with _lock:
        cached = _cache.get(key)
        if cached is not None and cached[0] == signature:
            _cache.move_to_end(key)
            return cached[1]
        index = _build(files, max_bytes)
        _cache[key] = (signature, index)
        while len(_cache) > CACHED_FOLDERS:
            _cache.popitem(last=False)
        return index


@tool
def search_docs(query: str, k: int = 3, *, ctx: ToolContext) -> str:
    """Search the documentation folder; returns the k best-matching passages with their files.

    Args:
        query: a few content words, e.g. "cache stampede mitigation".
        k: how many passages to return, 1 to 10.
    """
    k = max(1, min(k, MAX_K))
    folder = ctx.docs_dir or ctx.workspace
    try:
        root = folder.resolve(strict=True)
    except OSError:
        raise ToolError(f"the docs folder {folder} does not exist") from None
    if not root.is_dir():
        raise ToolError(f"the docs folder {folder} is not a folder")
    query_tokens = _tokenize([query])
    if not query_tokens[0]:
        raise ToolError("the query has no searchable words; use content words, e.g. 'cache TTL'")
    index = _index(root, ctx.max_bytes)
    if not index.passages:
        raise ToolError(f"there are no .md, .txt or .rst files to search in {folder}")
    found, scores = index.retriever.retrieve(
        query_tokens, k=min(k, len(index.passages)), show_progress=False
    )
    hits = [
        (index.passages[int(i)], float(s))
        for i, s in zip(found[0], scores[0], strict=True)
        if s > 0
    ]
    if not hits:
        shown = query if len(query) <= 100 else query[:100] + "..."  # a huge query, not echoed
        return f"no passage matches {shown!r}; try other or fewer words"
    # Share the result budget so that the caller's truncation never drops a whole hit.
    budget = max(ctx.max_result_chars // len(hits) - 80, 200)
    return "\n\n".join(
        f"[{n}] {passage.source} (score {score:.2f})\n{_shorten(passage.text, budget)}"
        for n, (passage, score) in enumerate(hits, 1)
    )


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " [...]"
