"""The lexical tokens of a source file, for BM25 search: identifiers, path tokens, imported names.

Read from the bytes the parse stage already holds (no second read of the file). Identifiers
are split at snake_case and camelCase boundaries and lowercased (`parseHTTPResponse_v2` →
parse, http, response); language keywords, common English words and one-letter pieces are
dropped. Path tokens and imported names say what a file is about more surely than a local
variable does, so they count `NAME_WEIGHT` times.
"""

from __future__ import annotations

import functools
import heapq
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from neo_ray.models import Import, Language

# BM25 saturates term frequency (k1 = 1.2): past a few occurrences a token adds almost
# nothing, so repeats are capped, which keeps a large file's token list (and what travels
# to the store) small.
MAX_REPEATS = 8
# The most distinct tokens kept per file (the most frequent ones): a generated or vendored
# file of 100,000 identifiers would otherwise outweigh everything else.
MAX_DISTINCT = 2000
NAME_WEIGHT = 3

_IDENTIFIER = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
# camelCase and acronym boundaries: "HTTPServerError2" → HTTP, Server, Error, 2.
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_PATH_SEPARATORS = re.compile(r"[/\\.:@\-]+")


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


_KEYWORDS: dict[Language, frozenset[str]] = {
    Language.PYTHON: _wordset(
        "and as assert async await break class continue def del elif else except false"
        " finally for from global if import in is lambda none nonlocal not or pass raise"
        " return self cls true try while with yield"
    ),
    Language.JAVASCRIPT: _wordset(
        "async await break case catch class const continue debugger default delete do"
        " else export extends false finally for from function if import in instanceof let"
        " new null of return super switch this throw true try typeof undefined var void"
        " while with yield require module exports"
    ),
    Language.JAVA: _wordset(
        "abstract assert boolean break byte case catch char class const continue default"
        " do double else enum extends final finally float for goto if implements import"
        " instanceof int interface long native new null package private protected public"
        " return short static strictfp super switch synchronized this throw throws"
        " transient try void volatile while true false var string object override"
    ),
    Language.GO: _wordset(
        "break case chan const continue default defer else fallthrough for func go goto"
        " if import interface map package range return select struct switch type var nil"
        " true false err string int bool byte error"
    ),
    Language.RUST: _wordset(
        "as async await break const continue crate dyn else enum extern false fn for if"
        " impl in let loop match mod move mut pub ref return self super static struct"
        " trait true type unsafe use where while some none ok err str usize u8 u32 u64 i32"
        " i64 bool string vec box option result"
    ),
}
_KEYWORDS[Language.TYPESCRIPT] = _KEYWORDS[Language.JAVASCRIPT] | _wordset(
    "any boolean declare enum implements interface keyof namespace never number"
    " private protected public readonly string type unknown abstract as is satisfies"
)

# English function words and the vocabulary every program shares (comments, docstrings,
# boilerplate): they rank nothing.
STOPWORDS = _wordset(
    "a an the and or but if then else of to in on at by for with from into over under"
    " is are was were be been being has have had do does did not no yes this that"
    " these those it its we you they he she i me my our your their them there here"
    " what which who whom when where why how all any each every some such only own"
    " same so than too very can will just should would could may might must shall also"
    " get set new old one two use used using via per see todo fixme xxx note args"
    " kwargs param params return returns value values type data obj val var tmp foo"
    " bar baz test tests py js ts tsx jsx mjs cjs go rs java pyi index init main src"
    " lib"
)


def file_tokens(
    source: bytes, language: Language, path: str, imports: Sequence[Import] = ()
) -> tuple[str, ...]:
    """A file's lexical tokens as a bag: each word repeated as often as it occurs, up to
    MAX_REPEATS, the MAX_DISTINCT most frequent words kept."""
    words = _words_of(language)
    counts: dict[str, int] = {}  # a plain dict: Counter's missing-key path is Python code
    get = counts.get
    for identifier, n in Counter(_IDENTIFIER.findall(source)).items():
        kept = words.get(identifier)
        if kept is None:
            kept = words[identifier] = _kept(identifier.decode("ascii"), language)
        for word in kept:
            counts[word] = get(word, 0) + n
    for name in (path.rsplit(".", 1)[0], *_imported(imports)):
        for piece in _PATH_SEPARATORS.split(name):
            for word in _kept(piece, language):
                counts[word] = get(word, 0) + NAME_WEIGHT
    if len(counts) > MAX_DISTINCT:
        counts = dict(heapq.nlargest(MAX_DISTINCT, counts.items(), key=_count))
    # Order does not matter to BM25; Counter.elements repeats each word in C.
    return tuple(Counter({word: min(n, MAX_REPEATS) for word, n in counts.items()}).elements())


def _count(item: tuple[str, int]) -> int:
    return item[1]


# identifier → its kept words, per language: a repository repeats its identifiers across
# files, and splitting each once is most of the work saved.
_CACHE_LIMIT = 200_000
_caches: dict[Language, dict[bytes, tuple[str, ...]]] = {}


def _words_of(language: Language) -> dict[bytes, tuple[str, ...]]:
    cache = _caches.setdefault(language, {})
    if len(cache) > _CACHE_LIMIT:
        cache.clear()
    return cache


def _kept(identifier: str, language: Language) -> tuple[str, ...]:
    dropped = _KEYWORDS[language]
    return tuple(w for w in split_identifier(identifier) if w not in dropped and w not in STOPWORDS)


@functools.lru_cache(maxsize=65536)
def split_identifier(identifier: str) -> tuple[str, ...]:
    """`parseHTTPResponse_v2` → (parse, http, response): lowercased words of two letters or
    more, digits dropped."""
    words = []
    for part in identifier.split("_"):
        for word in _WORD.findall(part):
            if len(word) > 1 and not word.isdigit():
                words.append(word.lower())
    return tuple(words)


def _imported(imports: Sequence[Import]) -> Iterable[str]:
    """The module paths and imported names an import list writes."""
    for imp in imports:
        yield imp.module
        yield from (name for name in imp.names if name != "*")
