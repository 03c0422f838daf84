"""Every metric against cases computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from repolm.errors import RepolmError
from repolm.eval.metrics import (
    bleu,
    edit_similarity,
    exact_match,
    first_line,
    identifier_match,
    identifiers,
    mean,
    pass_at_k,
    recall_at_k,
    rouge_l,
)
from repolm.eval.qa import (
    QAItem,
    citation_coverage,
    cited_ids,
    normalize_answer,
    qa_exact_match,
    read_qa,
    score_qa,
    strip_citations,
    token_f1,
)

# -- completion -------------------------------------------------------------------------------


def test_exact_match_ignores_trailing_whitespace_and_blank_lines_only() -> None:
    assert exact_match("\n\nx = 1   \ny = 2\n\n", "x = 1\r\ny = 2")
    assert not exact_match("  x = 1", "x = 1")  # indentation is syntax
    assert not exact_match("x = 1\n\ny = 2", "x = 1\ny = 2")  # an inner blank line counts
    assert not exact_match("x=1", "x = 1")


def test_edit_similarity_is_fuzz_ratio_not_levenshtein() -> None:
    # fuzz.ratio = 2 * LCS / (len a + len b)
    # "abc" / "abd": LCS "ab" = 2 -> 4 / 6
    assert edit_similarity("abc", "abd") == pytest.approx(2 / 3)
    # "abc" / "abcd": LCS 3 -> 6 / 7 (1 - Levenshtein / max len would give 3 / 4)
    assert edit_similarity("abc", "abcd") == pytest.approx(6 / 7)
    assert edit_similarity("abc", "xyz") == 0.0
    assert edit_similarity("", "") == 1.0
    # normalised like exact_match: an exact match scores 1.0
    assert edit_similarity("foo(x)  \n\n", "\nfoo(x)") == 1.0


def test_first_line() -> None:
    assert first_line("\n  \n    foo(x)   \n bar") == "    foo(x)"
    assert first_line("") == ""
    assert first_line(" \n\t\n") == ""


PYTHON = 'def area(self, radius):\n    """Doc words."""\n    return math.pi * radius ** 2  # note\n'
RUST = (
    "fn add(&self, a: u32) -> Self { let total: Vec<u32> = std::iter::once(a).collect();"
    " self.total = total; total }"
)


def test_identifiers_python_tree_sitter() -> None:
    # no `def`/`return` (keywords), no "Doc"/"words" (string), no "note" (comment)
    assert identifiers(PYTHON, "Python") == ["area", "self", "radius", "math", "pi", "radius"]
    assert identifiers(PYTHON, "python") == identifiers(PYTHON, "Python")
    # a partial line still parses (with error nodes) and yields its names
    assert identifiers("    return foo(bar,", "Python") == ["foo", "bar"]


def test_identifiers_rust_tree_sitter() -> None:
    # Rust's `self` is a keyword and `u32` a primitive type; `Self`, `Vec` are type identifiers,
    # `collect` and `.total` field identifiers, `std::iter::once` three identifiers
    assert identifiers(RUST, "Rust") == [
        "add",
        "a",
        "Self",
        "total",
        "Vec",
        "std",
        "iter",
        "once",
        "a",
        "collect",
        "total",
        "total",
        "total",
    ]


def test_identifiers_other_grammar_names() -> None:
    assert identifiers("int f(int x) { return x + y; }", "C++") == ["f", "x", "x", "y"]
    assert identifiers("val x: Int = foo.bar(y)", "Kotlin") == ["x", "Int", "foo", "bar", "y"]


def test_identifiers_regex_fallback_for_unknown_language() -> None:
    # no grammar: every name-shaped word outside quotes, keywords included
    code = "let x = \"hello world\" + y2 + 'a b' + 3"
    assert identifiers(code, "NoSuchLanguage") == ["let", "x", "y2"]
    assert identifiers(code) == ["let", "x", "y2"]
    # keywords drop out only with a grammar: the tree-sitter path really ran
    assert identifiers("if x: pass", "Python") == ["x"]
    assert identifiers("if x: pass") == ["if", "x", "pass"]


def test_identifier_match() -> None:
    # same names, other order: EM 0, sets equal -> F1 1
    assert identifier_match("foo(a, b)", "foo(b, a)", "Python") == (0.0, 1.0)
    # {foo, a} vs {foo, b}: tp 1, fp 1, fn 1 -> 2*1 / (2*1 + 1 + 1) = 0.5
    assert identifier_match("foo(a, a)", "foo(b)", "Python") == (0.0, 0.5)
    # sets, as CrossCodeEval: [x, x, y] vs [x, y] -> F1 1.0 (multisets would give 2*2/5 = 0.8)
    assert identifier_match("x + x + y", "x + y", "Python") == (0.0, 1.0)
    assert identifier_match("return foo(x)", "return foo(x)  ", "Python") == (1.0, 1.0)
    # nothing to name on either side: a match
    assert identifier_match("}", "}", "Rust") == (1.0, 1.0)
    # {x} vs {}: 0 / (1 + 0)
    assert identifier_match("x", ")", "Python") == (0.0, 0.0)


# -- retrieval --------------------------------------------------------------------------------


def test_recall_at_k() -> None:
    ranked = ["a", "b", "c", "d"]
    relevant = {"b", "d", "e"}
    assert recall_at_k(ranked, relevant, 1) == 0.0  # {a} ∩ relevant = {}
    assert recall_at_k(ranked, relevant, 2) == pytest.approx(1 / 3)  # {b}
    assert recall_at_k(ranked, relevant, 4) == pytest.approx(2 / 3)  # {b, d}
    assert recall_at_k(ranked, relevant, 10) == pytest.approx(2 / 3)  # k past the list
    assert recall_at_k(["b", "b", "d"], ["b", "d"], 2) == 0.5  # a repeat counts once
    with pytest.raises(ValueError, match="relevant"):
        recall_at_k(ranked, set(), 3)
    with pytest.raises(ValueError, match="k must"):
        recall_at_k(ranked, relevant, 0)


# -- text -------------------------------------------------------------------------------------


def test_rouge_l() -> None:
    # reference "the cat sat on the mat" (6), prediction "the cat on the mat" (5):
    # LCS "the cat on the mat" = 5; P = 5/5, R = 5/6; F = 2PR/(P+R) = (10/6)/(11/6) = 10/11
    assert rouge_l("the cat on the mat", "the cat sat on the mat") == pytest.approx(10 / 11)
    # "cat the sat" vs "the cat sat": LCS 2 ("cat sat"); P = R = 2/3 -> F = 2/3
    assert rouge_l("cat the sat", "the cat sat") == pytest.approx(2 / 3)
    # lower-cased, punctuation dropped
    assert rouge_l("The Cat.", "the cat") == 1.0
    assert rouge_l("dog", "the cat") == 0.0


def test_bleu() -> None:
    assert bleu(["the quick brown fox jumps"], ["the quick brown fox jumps"]) == pytest.approx(100)
    # hyp "the cat sat on the mat" (6 tokens), ref "the cat sat on the red mat" (7 tokens)
    # 1-grams 6/6; 2-grams 4/5 (not "the mat"); 3-grams 3/4 (not "on the mat");
    # 4-grams 2/3 (not "sat on the mat"). No zero count, so smoothing plays no part.
    # geometric mean (1 * 4/5 * 3/4 * 2/3) ** (1/4) = 0.4 ** 0.25
    # brevity penalty exp(1 - 7/6)
    expected = 100 * math.exp(1 - 7 / 6) * 0.4**0.25  # 67.318...
    assert bleu(["the cat sat on the mat"], ["the cat sat on the red mat"]) == pytest.approx(
        expected, rel=1e-6
    )
    # corpus BLEU sums counts: the pair above plus an identical 6-token pair gives
    # 1-grams 12/12, 2-grams 9/10, 3-grams 7/8, 4-grams 5/6, lengths 12 vs 13
    expected = 100 * math.exp(1 - 13 / 12) * (9 / 10 * 7 / 8 * 5 / 6) ** 0.25
    got = bleu(
        ["the cat sat on the mat", "a dog ran in the park"],
        ["the cat sat on the red mat", "a dog ran in the park"],
    )
    assert got == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError):
        bleu(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        bleu([], [])


# -- execution and aggregation ----------------------------------------------------------------


def test_pass_at_k() -> None:
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # c / n
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(3, 1, 2) == pytest.approx(2 / 3)  # 1 - C(2,2)/C(3,2) = 1 - 1/3
    # 1 - C(199,100)/C(200,100) = 1 - 100/200: large n without overflow
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0  # n - c = 2 < k: every 3 samples hold a pass
    for n, c, k in [(5, 6, 1), (5, 2, 0), (5, 2, 6), (5, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_mean() -> None:
    assert mean([]) is None
    assert mean(x for x in [1.0, 2.0, 4.0]) == pytest.approx(7 / 3)


# -- QA ---------------------------------------------------------------------------------------


def test_normalize_answer() -> None:
    assert normalize_answer("The  Cat!") == "cat"
    assert normalize_answer("An apple, a day.") == "apple day"
    assert normalize_answer("Levi's Stadium") == "levis stadium"
    assert normalize_answer("theory") == "theory"  # articles only as whole words


def test_qa_exact_match_and_f1_on_squad_examples() -> None:
    # SQuAD v1.1 dev, Super Bowl 50: "Which NFL team represented the AFC at Super Bowl 50?"
    answers = ["Denver Broncos", "Denver Broncos", "Denver Broncos"]
    assert qa_exact_match("the Denver Broncos", answers) == 1.0
    assert token_f1("the Denver Broncos", answers) == 1.0
    # "broncos" vs "denver broncos": P = 1/1, R = 1/2 -> F1 = 2/3
    assert qa_exact_match("Broncos", answers) == 0.0
    assert token_f1("Broncos", answers) == pytest.approx(2 / 3)
    # "Where did Super Bowl 50 take place?"
    venue = "Levi's Stadium in the San Francisco Bay Area at Santa Clara, California."
    # gold: levis stadium in san francisco bay area at santa clara california (11 tokens);
    # "santa clara california": 3 shared; P = 3/3, R = 3/11 -> F1 = (6/11)/(14/11) = 3/7
    assert token_f1("Santa Clara, California", [venue]) == pytest.approx(3 / 7)
    assert token_f1("Santa Clara, California", [venue, "Santa Clara, California"]) == 1.0
    # repeated tokens count up to their gold count: "denver denver" vs "denver broncos":
    # 1 shared; P = 1/2, R = 1/2 -> F1 = 1/2
    assert token_f1("Denver Denver", answers) == pytest.approx(0.5)
    assert token_f1("", answers) == 0.0
    assert token_f1("The", ["a"]) == 1.0  # both normalise to nothing
    with pytest.raises(ValueError):
        token_f1("x", [])
    with pytest.raises(ValueError):
        qa_exact_match("x", "x")  # a bare string is not a list of answers


def test_cited_ids_and_coverage() -> None:
    text = (
        "See [chunk:src/a.py:1-9] and [3, 7]; xs[0] is [not a citation] "
        "([link](http://x)) [chunk:b; c]"
    )
    assert cited_ids(text) == {"src/a.py:1-9", "3", "7", "b", "c"}
    assert strip_citations("The answer [chunk:a] is [x y].") == "The answer  is [x y]."
    assert cited_ids("no citations here") == set()
    assert citation_coverage({"a", "x"}, {"a", "b"}) == 0.5  # extra "x" costs nothing
    assert citation_coverage(set(), ["a"]) == 0.0
    with pytest.raises(ValueError):
        citation_coverage({"a"}, [])


def test_read_qa(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(
        '{"question": "Who?", "answer": "Ada", "id": 7}\n'
        "\n"
        '{"question": "Where?", "answers": ["here", "there"], "context": "c",'
        ' "chunk_ids": [1, "x"]}\n',
        encoding="utf-8",
    )
    assert read_qa(path) == [
        QAItem("Who?", ("Ada",)),
        QAItem("Where?", ("here", "there"), "c", ("1", "x")),
    ]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('{"question": "q"', "not valid JSON"),
        ('{"question": "q"}', '"answer"'),
        ('{"answer": "a"}', '"question"'),
        ('["q", "a"]', "JSON object"),
        ('{"question": "q", "answer": 3}', '"answer"'),
        ('{"question": "q", "answers": []}', "empty"),
        ('{"question": "q", "answer": "a", "chunk_ids": [null]}', '"chunk_ids"'),
    ],
)
def test_read_qa_names_file_and_line_of_a_bad_line(tmp_path: Path, line: str, why: str) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(RepolmError) as info:
        read_qa(path)
    assert info.value.message.startswith(f"{path}:3: ")
    assert why in info.value.message
    assert info.value.hint


def test_read_qa_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RepolmError, match="cannot read"):
        read_qa(tmp_path / "absent.jsonl")


def test_score_qa() -> None:
    items = [
        QAItem("Team?", ("Denver Broncos",), chunk_ids=("c1", "c2")),
        QAItem("Where?", ("Santa Clara, California",), chunk_ids=("c3",)),
        QAItem("Answer?", ("42",)),
    ]
    predictions = ["The Denver Broncos [chunk:c1]", "in Santa Clara [c3]", "41"]
    # EM: 1, 0, 0 -> 1/3. F1: 1; "in santa clara" vs "santa clara california": 2 shared,
    # P = R = 2/3 -> 2/3; 0 -> (1 + 2/3 + 0) / 3 = 5/9. Citations: c1 of {c1, c2} = 1/2,
    # c3 of {c3} = 1; item 3 has no chunk ids -> (1/2 + 1) / 2 = 3/4
    scores = score_qa(items, predictions)
    assert scores["n"] == 3
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(5 / 9)
    assert scores["citation_coverage"] == pytest.approx(3 / 4)
    # explicit citations replace the ones in the text: (2/2 + 0/1) / 2
    cited = [{"c1", "c2"}, set(), set()]
    assert score_qa(items, predictions, cited)["citation_coverage"] == pytest.approx(1 / 2)
    assert score_qa(items[2:], ["42"]) == {
        "n": 1,
        "exact_match": 1.0,
        "f1": 1.0,
        "citation_coverage": None,
    }
    assert score_qa([], []) == {"n": 0, "exact_match": None, "f1": None, "citation_coverage": None}
    with pytest.raises(ValueError):
        score_qa(items, predictions[:2])
