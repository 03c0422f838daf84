"""Behavioural suites: the shipped template loads and fills from a real repository run through the
filter stage, rubrics score hand-computed answers exactly, bad suite files name the file and the
test, and a tiny model answers a suite end to end."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path

import pytest

from conftest import GitRepo, isolate, save_base_model
from repolm.config import load_config
from repolm.errors import RepolmError
from repolm.eval import behaviour as suites
from repolm.eval import templates
from repolm.eval.behaviour import Rubric, Suite, fill, load_suite, score_answer, score_suite
from repolm.eval.facts import PLACEHOLDERS, RepoFacts, is_test_path, repo_facts
from repolm.pipeline.runner import run_pipeline

DOCS = Path(__file__).resolve().parents[1] / "docs" / "suites.md"


def make_shop(path: Path) -> GitRepo:
    """Three modules (shop.cart changes every commit, shop.pricing every other one, store.db every
    fourth), an entry point, and tests; cart imports store.db, pricing imports cart."""
    r = GitRepo(path)
    r.write("README.md", "# Shopkeeper\n\nA small shop: carts, prices and a store.\n")
    for i in range(10):
        r.write(
            "shop/cart.py",
            (
                "from store.db import Store\n\n\n"
                f"def add_item(cart, item):\n    cart.append(item * {i})\n    return cart\n\n\n"
                "def remove_item(cart, item):\n    cart.remove(item)\n    return cart\n"
            ),
        )
        if i % 2 == 0:
            r.write(
                "shop/pricing.py",
                (
                    "from shop.cart import add_item\n\n\n"
                    f"def total(cart):\n    return sum(cart) + {i}\n\n\n"
                    "class Discount:\n    def apply(self, price):\n"
                    "        return price * 0.9\n"
                ),
            )
        if i % 4 == 0:
            r.write(
                "store/db.py",
                (
                    f"class Store:\n    def get(self, key):\n        return key * {i}\n\n\n"
                    "def connect(url):\n    return Store()\n"
                ),
            )
        if i % 3 == 0:
            r.write(
                "tests/test_cart.py",
                (
                    "from shop.cart import add_item, remove_item\n\n\n"
                    f"def test_add_item():\n    assert add_item([], 1) == [{i}]\n\n\n"
                    "def test_remove_item():\n    assert remove_item([1], 1) == []\n"
                ),
            )
        if i == 1:
            r.write(
                "shop/cli.py",
                "from shop.pricing import total\n\n\ndef main():\n    print(total([1, 2]))\n",
            )
        r.commit(f"step {i}")
    return r


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the shop repository through the filter stage."""
    root = tmp_path_factory.mktemp("suites")
    with pytest.MonkeyPatch.context() as mp:
        isolate(tmp_path_factory.mktemp("home"), mp)
        repo = make_shop(root / "shopkeeper")
        run_pipeline(root / "run", repo.path, load_config(), until="filter")
    return root / "run"


@pytest.fixture(scope="module")
def facts(run_dir: Path) -> RepoFacts:
    return repo_facts(run_dir)


def template() -> Suite:
    return load_suite(suites.builtin_suites()["reasoning"])


def texts(suite: Suite) -> list[str]:
    return list(templates._texts(suite.model_dump(exclude={"dropped"})))


# -- the template -----------------------------------------------------------------------------


def test_template_has_30_tests_five_per_category() -> None:
    suite = template()
    assert suite.name == "reasoning" and len(suite.tests) == 30
    assert Counter(t.category for t in suite.tests) == {c: 5 for c in suites.TEMPLATE_CATEGORIES}
    assert suite.categories() == list(suites.TEMPLATE_CATEGORIES)
    assert suites.placeholders_in(suite) <= set(PLACEHOLDERS)
    for t in suite.tests:  # every question is about the repository, every rubric can score
        assert "{" in t.prompt and (t.rubric.required or t.rubric.reference)


def test_docs_list_every_placeholder() -> None:
    text = DOCS.read_text()
    for name in PLACEHOLDERS:
        assert f"`{{{name}}}`" in text or f"`{{{name}}}`," in text, name
    assert "repolm eval suite" in text


def test_facts_of_the_shop_repository(facts: RepoFacts) -> None:
    assert facts.repo_name == "shopkeeper" and facts.language == "Python"
    names = [m.name for m in facts.modules]
    assert names[:3] == ["shop.cart", "shop.pricing", "store.db"] and "shop.cli" in names
    cart = facts.modules[0]
    assert cart.path == "shop/cart.py"
    assert cart.functions == ("add_item", "remove_item")  # add_item changed in every commit
    assert cart.dependents == ("shop.pricing",) and cart.dependencies == ("store.db",)
    assert facts.top_files[:3] == ("shop/cart.py", "shop/pricing.py", "store/db.py")
    assert facts.co_changed[0] == "shop/pricing.py"
    assert facts.types[0] == ("Store", "store/db.py", "store.db")
    assert facts.test_files == ("tests/test_cart.py",)
    assert set(facts.tests) == {"test_add_item", "test_remove_item"}
    assert facts.entry_point == "shop/cli.py"


@pytest.mark.parametrize(
    ("path", "is_test"),
    [
        ("tests/test_cart.py", True),
        ("src/cart_test.go", True),
        ("web/cart.test.js", True),
        ("src/test/java/CartTest.java", True),
        ("spec/cart_spec.rb", True),
        ("pkg/contest.py", False),
        ("src/cart.py", False),
        ("src/latest.rs", False),
    ],
)
def test_test_paths(path: str, is_test: bool) -> None:
    assert is_test_path(path) is is_test


def test_template_fills_from_the_repository(run_dir: Path, facts: RepoFacts) -> None:
    filled = suites.fill_template(suites.builtin_suites()["reasoning"], facts)
    assert len(filled.tests) == 30 and filled.dropped == {}
    for text in texts(filled):
        assert not re.search(r"\{[A-Za-z_]\w*\}", text), text
    by_id = {t.id: t for t in filled.tests}
    role = by_id["architecture-module-role"]
    assert role.prompt == (
        "What is the responsibility of shop.cart (shop/cart.py) in "
        "shopkeeper, and what are its most important functions?"
    )
    assert role.rubric.required[0].name == "shop.cart"
    assert role.rubric.required[0].synonyms == ["shop/cart.py", "cart"]
    assert role.rubric.required[1].name == "add_item"
    assert "add_item" in role.rubric.reference
    assert by_id["cross-module-dependents"].rubric.required[0].name == "shop.pricing"
    assert by_id["cross-module-co-change"].rubric.required[0].synonyms == ["pricing.py"]
    assert by_id["edge-cases-tests"].rubric.required[0].name == "tests/test_cart.py"
    assert by_id["architecture-entry-point"].rubric.required[0].name == "shop/cli.py"
    # module_3 is store.db: its short name `db` is too short to be a term, so only that synonym
    # is left out
    assert by_id["performance-io"].rubric.required[0].synonyms == ["store/db.py"]
    # placeholders in regular expressions are escaped: `.` is a dot, not any character
    claim = role.rubric.forbidden[0]
    assert claim.name == r"re:\bshop\.cart (?:has been|was) (?:removed|deleted)\b"
    assert score_answer("shop.cart was removed", role.rubric).forbidden
    assert not score_answer("shopXcart was removed", role.rubric).forbidden
    # a suite with placeholders is resolved against the run; without one it is refused
    assert suites.resolve_suite("reasoning", run_dir) == filled
    with pytest.raises(RepolmError, match="is a template"):
        suites.resolve_suite("reasoning")


def test_tests_needing_missing_facts_are_dropped(facts: RepoFacts) -> None:
    bare = dataclasses.replace(facts, test_files=(), tests=(), entry_point=None)
    filled = fill(template(), bare)
    assert set(filled.dropped) == {
        "edge-cases-tests",
        "architecture-entry-point",
        "incentives-abuse",
    }
    assert "{test_file}" in filled.dropped["edge-cases-tests"]
    assert len(filled.tests) == 27
    assert score_suite(filled, {})["counts"]["dropped"] == 3
    # a fact used only by a reference answer leaves the reference out, not the test
    two_modules = dataclasses.replace(facts, modules=facts.modules[:2])
    overview = {t.id: t for t in fill(template(), two_modules).tests}["architecture-overview"]
    assert overview.rubric.reference is None and overview.rubric.required
    with pytest.raises(RepolmError, match="no test of suite reasoning"):
        fill(template(), RepoFacts(repo_name="empty"))


# -- scoring ----------------------------------------------------------------------------------


def rubric(**fields: object) -> Rubric:
    return Rubric.model_validate(fields)


def test_concept_share_all_some_none() -> None:
    r = rubric(required=["cart", {"name": "pricing", "weight": 2}, "store"])
    assert score_answer("The cart, the pricing and the store.", r).score == 100.0
    some = score_answer("Pricing uses the cart.", r)
    assert some.score == 75.0 and some.concepts == 0.75  # (1 + 2) / 4
    assert some.found == {"cart": "cart", "pricing": "Pricing"} and some.missing == ["store"]
    assert score_answer("Nothing relevant here.", r).score == 0.0
    assert score_answer("", r).score == 0.0


def test_terms_synonyms_prefixes_and_regexes() -> None:
    r = rubric(
        required=[
            {"name": "cache", "synonyms": ["memoi*"]},
            {"name": "rate limit"},
            {"name": "big-O", "synonyms": [r"re:\bO\([^)]*\)"]},
            {"name": "I/O"},
        ]
    )
    s = score_answer("Memoizing helps; add a Rate-Limit; it is O(n log n) in disk i/o.", r)
    assert s.found == {
        "cache": "Memoizing",
        "rate limit": "Rate-Limit",
        "big-O": "O(n log n)",
        "I/O": "i/o",
    }
    assert s.score == 100.0
    # whole words only: a longer word is not the concept
    miss = score_answer("The cachet of a ratelimiter is Ohm-like.", r)
    assert miss.found == {} and miss.score == 0.0


def test_forbidden_claims_subtract_and_clamp() -> None:
    r = rubric(
        required=["cart"], forbidden=[r"re:\bis unused\b", {"name": "dead code", "weight": 3}]
    )
    hit = score_answer("The cart module is unused.", r)
    assert hit.score == 75.0 and hit.penalty == 25.0
    assert hit.forbidden == {r"re:\bis unused\b": "is unused"}
    assert score_answer("The cart is not unused.", r).score == 100.0  # the claim itself only
    both = score_answer("The cart is unused: dead code.", r)
    assert both.penalty == 100.0 and both.score == 0.0  # 25 * (1 + 3), clamped at 0


def test_reference_and_the_worked_example_of_the_docs() -> None:
    only = rubric(reference="the cart module stores items in a list")
    # ROUGE-L: LCS 5 tokens, precision 5/5, recall 5/8 -> F = 2 * 5/8 / (1 + 5/8)
    s = score_answer("The cart module stores items", only)
    assert s.reference == pytest.approx(2 * 0.625 / 1.625) and s.concepts is None
    assert s.score == round(100 * 2 * 0.625 / 1.625, 2) == 76.92
    worked = rubric(
        required=[{"name": "retry", "weight": 2}, "backoff", "jitter"],
        forbidden=[r"re:\bretry forever\b"],
        reference="retry with exponential backoff",
    )
    s = score_answer("Callers retry forever with exponential backoff", worked)
    assert s.concepts == 0.75 and s.reference == pytest.approx(0.8)
    assert s.score == 51.5  # 70 * 0.75 + 30 * 0.8 - 25
    assert "51.5" in DOCS.read_text()
    even = rubric(
        required=["retry"],
        reference="retry with backoff",
        weights={"concepts": 50, "reference": 50, "penalty": 10},
    )
    assert score_answer("retry", even).score == 75.0  # 50 * 1 + 50 * (2 * 1 * 1/3 / (4/3))


def test_score_suite_means_per_category_and_overall() -> None:
    suite = Suite.model_validate(
        {
            "name": "s",
            "tests": [
                {"id": "a", "category": "x", "prompt": "?", "rubric": {"required": ["cart"]}},
                {
                    "id": "b",
                    "category": "x",
                    "prompt": "?",
                    "rubric": {"required": ["cart", "store"]},
                },
                {"id": "c", "category": "y", "prompt": "?", "rubric": {"required": ["store"]}},
            ],
        }
    )
    result = score_suite(suite, {"a": "cart", "b": "cart"})
    assert [t["score"] for t in result["tests"]] == [100.0, 50.0, 0.0]
    assert result["categories"] == {
        "x": {"score": 75.0, "tests": 2},
        "y": {"score": 0.0, "tests": 1},
    }
    assert result["overall"] == 50.0
    assert result["counts"] == {"tests": 3, "answered": 2, "unanswered": ["c"], "dropped": 0}
    assert result["tests"][1]["missing"] == ["store"]
    with pytest.raises(RepolmError, match="zzz"):
        score_suite(suite, {"zzz": "an answer to no test"})


# -- bad suite files --------------------------------------------------------------------------

GOOD_TEST = "  - id: t1\n    category: c\n    prompt: Why?\n    rubric: {required: [a]}\n"


@pytest.mark.parametrize(
    ("body", "expected", "hint"),
    [
        (
            "  - id: bad-test\n    category: c\n    promt: Why?\n    rubric: {required: [a]}\n",
            "test 'bad-test': unknown key 'promt'",
            "did you mean 'prompt'",
        ),
        (
            "  - id: bad-test\n    category: c\n    rubric: {required: [a]}\n",
            "test 'bad-test': missing key 'prompt'",
            "docs/suites.md",
        ),
        (
            "  - id: bad-test\n    category: c\n    prompt: Why?\n"
            "    rubric: {required: [{name: a, synonym: [b]}]}\n",
            "test 'bad-test': unknown key 'rubric.required[0].synonym'",
            "did you mean 'synonyms'",
        ),
        (
            "  - id: bad-test\n    category: c\n    prompt: Why?\n"
            "    rubric: {required: ['re:(']}\n",
            "test 'bad-test': rubric.required[0].name: invalid regular expression",
            None,
        ),
        (
            "  - id: bad-test\n    category: c\n    prompt: Why?\n    rubric: {forbidden: [x]}\n",
            "test 'bad-test': rubric: a rubric needs required concepts",
            None,
        ),
        (
            "  - id: bad-test\n    category: c\n    prompt: Where is {modul}?\n"
            "    rubric: {required: [a]}\n",
            "test 'bad-test': unknown placeholder {modul}",
            None,
        ),
        (GOOD_TEST, "test id 't1' is used twice", None),
    ],
)
def test_bad_suites_name_the_file_and_the_test(
    tmp_path: Path, body: str, expected: str, hint: str | None
) -> None:
    path = tmp_path / "my-suite.yaml"
    path.write_text("name: mine\ntests:\n" + GOOD_TEST + body)
    with pytest.raises(RepolmError) as info:
        load_suite(path)
    assert str(path) in info.value.message and expected in info.value.message
    if hint:
        assert hint in (info.value.hint or "")


def test_bad_yaml_and_bad_top_level(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntests: [\n")
    with pytest.raises(RepolmError, match=r"invalid YAML in suite .*broken\.yaml"):
        load_suite(path)
    path.write_text("name: x\ntest: []\n")
    with pytest.raises(RepolmError, match="unknown key 'test'") as info:
        load_suite(path)
    assert "did you mean 'tests'" in (info.value.hint or "")
    with pytest.raises(RepolmError, match="suite not found"):
        suites.resolve_suite(tmp_path / "nope.yaml")


def test_a_suite_without_placeholders_needs_no_run(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(
        "name: plain\ntests:\n  - id: t\n    category: c\n"
        "    prompt: 'What does {{x}} print?'\n"
        "    rubric: {required: [x]}\n"
    )
    suite = suites.resolve_suite(path)
    assert suite.tests[0].prompt == "What does {x} print?"


# -- running ----------------------------------------------------------------------------------


def test_run_suite_with_a_tiny_model(tmp_path: Path) -> None:
    from repolm.lm import load_model

    lm = load_model(save_base_model(tmp_path / "base"), precision="fp32")
    suite = Suite.model_validate(
        {
            "name": "tiny",
            "tests": [
                {
                    "id": "one",
                    "category": "architecture",
                    "prompt": "What does op_1 return?",
                    "rubric": {"required": ["op_1"], "reference": "a * 1 + b"},
                },
                {
                    "id": "two",
                    "category": "performance",
                    "prompt": "Is op_2 fast?",
                    "rubric": {"required": ["fast"]},
                },
            ],
        }
    )
    result = suites.run_suite(lm, suite, max_new_tokens=6)
    assert [t["id"] for t in result["tests"]] == ["one", "two"]
    for t in result["tests"]:
        assert isinstance(t["answer"], str) and 0.0 <= t["score"] <= 100.0
        assert t["prompt"] == {"one": "What does op_1 return?", "two": "Is op_2 fast?"}[t["id"]]
    assert set(result["categories"]) == {"architecture", "performance"}
    assert result["counts"]["answered"] == 2
    assert result["generation"]["max_new_tokens"] == 6
    assert suites.format_prompt("Why?") == "Question: Why?\nAnswer: "
    # never more new tokens than half the context (128 for the tiny model)
    assert suites.run_suite(lm, suite, max_new_tokens=10_000)["generation"]["max_new_tokens"] == 64
