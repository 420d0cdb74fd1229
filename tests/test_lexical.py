"""Lexical tokens: identifier splitting, what is dropped and weighted, and their collection
during the graph build from the bytes the parse already read."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from neo_ray.models import Import, Language
from neo_ray.pipeline import graph as graph_module
from neo_ray.pipeline.graph import build_graph
from neo_ray.pipeline.lexical import (
    MAX_DISTINCT,
    MAX_REPEATS,
    NAME_WEIGHT,
    file_tokens,
    split_identifier,
)


@pytest.mark.parametrize(
    ("identifier", "words"),
    [
        ("parseHTTPResponse_v2", ("parse", "http", "response")),
        ("HTTPServerError", ("http", "server", "error")),
        ("snake_case_name", ("snake", "case", "name")),
        ("__init__", ("init",)),
        ("XMLHttpRequest", ("xml", "http", "request")),
        ("x", ()),
        ("a1b2", ()),
        ("getUserID", ("get", "user", "id")),
    ],
)
def test_identifiers_split_at_case_and_underscores(identifier: str, words: tuple[str, ...]) -> None:
    assert split_identifier(identifier) == words


def test_keywords_and_stopwords_are_dropped_names_weighted() -> None:
    source = b"""
import os
from billing.invoices import InvoiceTotal

def compute_invoice_total(self, order):
    # the total of the order, if any
    return InvoiceTotal(order).amount
"""
    imports = [Import("os"), Import("billing.invoices", names=("InvoiceTotal",), kind="from")]
    bag = Counter(file_tokens(source, Language.PYTHON, "billing/tax_rules.py", imports))
    for dropped in ("def", "return", "self", "import", "from", "the", "of", "if", "any"):
        assert dropped not in bag
    # Source identifiers count once per occurrence; path and imported names NAME_WEIGHT each.
    assert bag["order"] == 3  # order (parameter), order (comment), order (call)
    assert bag["amount"] == 1
    assert bag["tax"] == bag["rules"] == NAME_WEIGHT
    assert bag["billing"] == 1 + 2 * NAME_WEIGHT  # source, path, import module
    assert bag["invoices"] == 1 + NAME_WEIGHT
    # invoice: compute_invoice_total; total: that, InvoiceTotal twice, the comment; plus
    # the imported name InvoiceTotal, NAME_WEIGHT each.
    assert bag["invoice"] == min(3 + NAME_WEIGHT, MAX_REPEATS)
    assert bag["total"] == min(4 + NAME_WEIGHT, MAX_REPEATS)
    assert "os" in bag


def test_each_language_drops_its_own_keywords() -> None:
    assert "func" not in file_tokens(b"func ParseConfig() {}", Language.GO, "cfg.go")
    assert "config" in file_tokens(b"func ParseConfig() {}", Language.GO, "cfg.go")
    ts = file_tokens(
        b"export interface UserProfile { readonly id: number }", Language.TYPESCRIPT, "a.ts"
    )
    assert set(ts) == {"user", "profile", "id"}
    rust = file_tokens(
        b"pub fn load_graph(mut g: Graph) -> Result<(), E> {}", Language.RUST, "x.rs"
    )
    assert set(rust) == {"load", "graph"}


def test_repeats_are_capped_and_distinct_tokens_bounded() -> None:
    many = b" ".join(b"alpha" for _ in range(100))
    assert Counter(file_tokens(many, Language.PYTHON, "x.py"))["alpha"] == MAX_REPEATS
    words = [
        f"w{'abcdefghij'[i % 10]}{'klmnopqrst'[i // 10 % 10]}{'uvwxyzabcd'[i // 100 % 10]}"
        f"{'efghijklmn'[i // 1000 % 10]}"
        for i in range(MAX_DISTINCT + 500)
    ]
    source = " ".join(words).encode()
    tokens = file_tokens(source + b" common common", Language.PYTHON, "x.py")
    assert len(set(tokens)) == MAX_DISTINCT
    assert Counter(tokens)["common"] == 2  # the most frequent words are the ones kept


def test_the_build_collects_tokens_reading_each_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {
        "shop/cart.py": "from shop.pricing import PriceRule\n\nclass ShoppingCart:\n    pass\n",
        "shop/pricing.py": "class PriceRule:\n    discount_rate = 0.1\n",
        "shop/__init__.py": "",
        "broken.py": "def (:\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    reads: Counter[str] = Counter()
    real_load = graph_module.load

    def counting_load(root: Path, rel: str, **kw: object) -> bytes | str:
        reads[rel] += 1
        return real_load(root, rel, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(graph_module, "load", counting_load)
    graph = build_graph(
        tmp_path, repo="r", commit=None, tracked=None, max_file_bytes=10**6, lexical_tokens=True
    )
    assert set(reads.values()) == {1}  # every file read once, tokens and imports alike
    assert graph.tokens is not None
    assert set(graph.tokens) == {n.path for n in graph.nodes} == set(files) - {"broken.py"}
    cart = Counter(graph.tokens["shop/cart.py"])
    assert cart["shopping"] == 1 and cart["price"] == 1 + NAME_WEIGHT
    assert cart["cart"] == 1 + NAME_WEIGHT  # ShoppingCart, and the path
    assert graph.tokens["shop/pricing.py"] == file_tokens(
        files["shop/pricing.py"].encode(), Language.PYTHON, "shop/pricing.py"
    )
    plain = build_graph(tmp_path, repo="r", commit=None, tracked=None, max_file_bytes=10**6)
    assert plain.tokens is None
    assert plain == graph  # tokens are not part of the graph's identity


def test_the_process_pool_collects_the_same_tokens(tmp_path: Path) -> None:
    count = graph_module.PARALLEL_MIN_FILES + 20
    for i in range(count):
        (tmp_path / f"m{i}.py").write_text(f"import m{(i + 1) % count}\nvalue_{i} = 'x'\n")
    kw = {"repo": "r", "commit": None, "tracked": None, "max_file_bytes": 10**6}
    here = build_graph(tmp_path, workers=0, lexical_tokens=True, **kw)  # type: ignore[arg-type]
    pooled = build_graph(tmp_path, workers=2, lexical_tokens=True, **kw)  # type: ignore[arg-type]
    assert here.tokens is not None and len(here.tokens) == count
    assert pooled.tokens == here.tokens
