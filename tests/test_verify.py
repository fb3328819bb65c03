"""The semantic cache's same-intent verifier (faregate.cache.verify).

Rule tests run without word vectors; the synonym tests use the real LocalEmbedder (skipped when
the model packages are not installed). Each near miss names the rule that must reject it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from faregate.cache.verify import Verdict, Verifier


@pytest.fixture(scope="module")
def rules() -> Verifier:
    return Verifier()


@pytest.fixture(scope="module")
def embedder():  # noqa: ANN201 - LocalEmbedder, imported lazily
    from faregate.cache.embedder import EmbedderError, LocalEmbedder

    try:
        return LocalEmbedder(threads=1)
    except EmbedderError as exc:
        pytest.skip(f"embedder not installed: {exc}")


@pytest.fixture(scope="module")
def vectors(embedder) -> Verifier:  # noqa: ANN001
    return Verifier(embedder.embed)


NEAR_MISSES = [  # (query, cached, start of the reason)
    ("Is 5 mg of melatonin safe?", "Is 50 mg of melatonin safe?", "numbers differ: 5 vs 50"),
    ("How do I print in Python 2?", "How do I print in Python 3?", "numbers differ"),
    ("How do I merge dicts in Python 3.9?", "How do I merge dicts in Python 3.5?",
     "numbers differ: 3.9 vs 3.5"),
    ("How do I merge two accounts into one?", "How do I merge three accounts into one?",
     "numbers differ: 2 vs 3"),
    ("When did World War I start?", "When did World War II start?", "numbers differ"),
    ("Is it safe to fly in the first trimester?", "Is it safe to fly in the third trimester?",
     "numbers differ"),
    ("How many feet are in a meter?", "How many feet are in a yard?", "units differ"),
    ("How do I get the time in milliseconds?", "How do I get the time in seconds?",
     "units differ"),
    ("Can I return headphones that I have opened?",
     "Can I return headphones that I haven't opened?", "negation differs"),
    ("What happens if I don't renew my plan?", "What happens if I renew my plan?",
     "negation differs"),
    ("Are returns free for members?", "Are returns free for non-members?", "negation differs"),
    ("How do I enable dark mode?", "How do I disable dark mode?", "antonyms: enable vs disable"),
    ("Can I take aspirin before surgery?", "Can I take aspirin after surgery?", "antonyms"),
    ("What is the maximum dose of ibuprofen?", "What is the minimum dose of ibuprofen?",
     "antonyms: maximum vs minimum"),
    ("How do I upload photos?", "How do I download photos?", "antonyms: upload vs download"),
    ("How do I lock my account?", "How do I unlock my account?", "antonyms: lock vs unlock"),
    ("What are the symptoms of hypothyroidism?", "What are the symptoms of hyperthyroidism?",
     "antonyms"),
    ("How do I import contacts?", "How do I export contacts?", "antonyms: import vs export"),
    ("When did the Titanic sink?", "Where did the Titanic sink?",
     "question differs: when vs where"),
    ("How tall is the Eiffel Tower?", "How old is the Eiffel Tower?", "question differs"),
    ("Is marriage important?", "Why is marriage important?", "question differs"),
    ("How do I convert Celsius to Fahrenheit?", "How do I convert Fahrenheit to Celsius?",
     "direction differs"),
    ("How do I convert a string to a list?", "How do I convert a list to a string?",
     "roles swapped"),
    ("How many devices can I use with one account?",
     "How many accounts can I use on one device?", "roles swapped"),
    ("How much is shipping to Germany?", "How much is shipping from Germany?",
     "direction differs: germany"),
    ("Is Pluto bigger than the Moon?", "Is the Moon bigger than Pluto?", "direction differs"),
    ("Is Python 3.10 faster than 3.11?", "Is Python 3.11 faster than 3.10?",
     "direction differs"),
    ("Do you ship to Canada?", "Do you ship to Mexico?", "entity differs: canada vs mexico"),
    ("How do I convert an int to a string in C++?", "How do I convert an int to a string in C#?",
     "entity differs"),
    ("Is it safe to take vitamin A during pregnancy?",
     "Is it safe to take vitamin E during pregnancy?", "entity differs"),
    ("How do I reset my password?", "How do I reset my username?",
     "content word unmatched: password"),
    ("What is the capital of Canada?", "What is the population of Canada?",
     "content word unmatched"),
    ("What is the population density of India?", "What is the population of India?",
     "content word unmatched: density"),
]

PARAPHRASES_BY_RULE = [  # accepted on rules alone (same words, another form)
    ("In Python, how do I reverse a list?", "How do I reverse a list in Python?"),  # reordered
    ("How do I reset my password?", "Could you please tell me how I can reset my password?"),
    ("What's the capital of France?", "What is the capital of France?"),  # contraction
    ("Why doesn't my phone charge?", "why does my phone not charge"),
    ("my phone wont turn on", "My phone will not turn on."),  # apostrophe missing
    ("How do I merge two accounts?", "How do I merge 2 accounts?"),  # written number
    ("How do I get the first 10 rows in SQL?", "SQL: get the first ten rows"),
    ("When did World War II end?", "When did World War 2 end?"),  # Roman numeral
    ("Can I pause my membership for a month?", "Can I pause my membership for one month?"),
    ("Is there a student discount?", "Do you offer discounts for students?"),  # plural, filler
    ("How do I reset my pasword?", "How do I reset my password?"),  # typo
    ("How do I convert a string to an int?", "How do I convert a string to an integer?"),
    ("How do I change my e-mail address?", "How do I change my email address?"),
    ("How do I convert Celsius to Fahrenheit?", "How do I convert to Fahrenheit from Celsius?"),
]

PARAPHRASES_BY_VECTORS = [  # need a near-synonym from word vectors
    ("Where can I buy a gift card?", "Where can I purchase a gift card?"),  # buy / purchase
    ("How do I list the files in a folder with Python?",
     "How do I list the files in a directory with Python?"),  # folder / directory
    ("Which ocean is the biggest?", "Which ocean is the largest?"),  # biggest / largest
    ("What is the population of Tokyo?", "How many people live in Tokyo?"),  # reworded
    ("How long does a concussion take to heal?", "What's the recovery time for a concussion?"),
]


@pytest.mark.parametrize(("query", "cached", "reason"), NEAR_MISSES)
def test_rules_reject_near_misses(rules: Verifier, query: str, cached: str, reason: str) -> None:
    verdict = rules.check(query, cached)
    assert not verdict.ok
    assert verdict.reason.startswith(reason), verdict.reason


@pytest.mark.parametrize(("query", "cached", "reason"), NEAR_MISSES)
def test_word_vectors_do_not_rescue_near_misses(
    vectors: Verifier, query: str, cached: str, reason: str
) -> None:
    verdict = vectors.check(query, cached)
    assert not verdict.ok
    assert verdict.reason.startswith(reason), verdict.reason


@pytest.mark.parametrize(("query", "cached"), PARAPHRASES_BY_RULE)
def test_rules_accept_paraphrases(rules: Verifier, query: str, cached: str) -> None:
    assert rules.check(query, cached) == Verdict(True, "")
    assert rules.check(cached, query).ok  # and the other way round


@pytest.mark.parametrize(("query", "cached"), PARAPHRASES_BY_VECTORS)
def test_word_vectors_accept_synonyms(
    rules: Verifier, vectors: Verifier, query: str, cached: str
) -> None:
    assert not rules.check(query, cached).ok  # the rules alone cannot tell
    assert vectors.check(query, cached) == Verdict(True, "")
    assert vectors.check(cached, query).ok


@pytest.mark.parametrize(("query", "cached"), [
    ("Can children take aspirin?", "Can children take ibuprofen?"),  # co-hyponyms: cosine 0.50
    ("Why does my dog eat grass?", "Why does my cat eat grass?"),  # 0.66, below 0.75
    ("do you ship to canada", "do you ship to mexico"),  # lowercase: no name, still a swap
])
def test_related_words_are_not_synonyms(vectors: Verifier, query: str, cached: str) -> None:
    verdict = vectors.check(query, cached)
    assert not verdict.ok
    assert verdict.reason.startswith("content word unmatched"), verdict.reason


def test_word_vectors_are_cached_and_bounded(embedder) -> None:  # noqa: ANN001
    calls: list[list[str]] = []

    def counting(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return embedder.embed(texts)

    verifier = Verifier(counting, cache_size=8)
    pair = ("Where can I buy a gift card?", "Where can I purchase a gift card?")
    assert verifier.check(*pair).ok
    assert len(calls) == 1  # every word the check needed, in one call
    assert verifier.check(*pair).ok
    assert len(calls) == 1  # the second check embeds nothing
    verifier.check("How do I list files in a folder?", "How do I list files in a directory?")
    verifier.check("Which ocean is the biggest?", "Which ocean is the largest?")
    assert len(verifier._vectors) <= 8


def test_fast_enough(vectors: Verifier) -> None:
    import time

    pairs = [(q, c) for q, c, _ in NEAR_MISSES] + PARAPHRASES_BY_RULE + PARAPHRASES_BY_VECTORS
    for q, c in pairs:  # warm the word-vector cache
        vectors.check(q, c)
    start = time.perf_counter()
    for _ in range(5):
        for q, c in pairs:
            vectors.check(q, c)
    per_check = (time.perf_counter() - start) / (5 * len(pairs))
    assert per_check < 1e-3, f"{per_check * 1e3:.2f} ms per check"


def _iter_pairs() -> Iterator[tuple[str, str]]:
    yield "", ""
    yield "", "How do I reset my password?"
    yield "???", "!!!"
    yield "42", "forty two"
    yield "ÉTÉ à Paris", "été a Paris"


@pytest.mark.parametrize(("query", "cached"), list(_iter_pairs()))
def test_odd_input_does_not_crash(vectors: Verifier, query: str, cached: str) -> None:
    assert isinstance(vectors.check(query, cached), Verdict)
