"""The same-intent check a semantic-cache candidate must pass beyond cosine similarity.

Cosine between sentence embeddings cannot tell "reset my password" from "reset my PIN" (0.9
both). `Verifier.check(query, cached)` compares the two texts word by word; the first rule that
finds a difference rejects:

  numbers    the sets of numbers differ: digits, versions (3.11), written (twenty five),
             ordinals, twice, Roman (World War II); a lone written "one"/"first" is like "a"
  units      both sides name units and the sets differ (mg/g, feet/yard, minutes/seconds)
  negation   the parity of negations differs (not, n't, never, without, no, non-, unable, lack)
  antonyms   a word on one side only has its opposite on the other side only: general English
             pairs plus prefixes (un-, dis-, non-, re-, a-, up/down, im/ex, en/de, hypo/hyper)
  question   who / when / where / why / "how long" ask different things; "why" differs from
             "how" and yes/no too ("how many"/"how much" go with any "how X")
  direction  a shared word changes side: "A to B" vs "B to A", "from X" vs "to X", the other side
             of "than", two words swap around of/with/on/per/for/at/in ("devices per account"),
             or the same numbers and units come in another order around to/from/than
  names      a capitalised, acronym or camel-case word (Canada, PIN, iPhone) with no match: no
             word on the other side within cosine 0.9
  content    every other content word needs a match: the same lemma, a one-letter typo, an
             abbreviation (int/integer), a joined form (e mail/email), or a near-synonym by word
             vectors. How near depends on where the word is: in a near-identical pair (difflib
             ratio of the word sequences >= 0.6, the shape of a near miss) cosine 0.75, which
             passed 44% of 50 synonym pairs and 8% of 50 co-hyponym pairs (dog/cat,
             Sydney/Melbourne); a word only added on one side of a reworded pair 0.3; a word in
             a reworded stretch 0.2 (rewording is what paraphrases look like).

Measured by bench/cache_eval.py with all-MiniLM-L6-v2. On bench/data/cache_pairs.jsonl (336
pairs in four domains, half near misses) cosine alone never gets precision above 0.55; with this
check precision is 1.00 at hit rate 0.70 (threshold 0.70) and 0.66 (threshold 0.75, the
default); without word vectors, hit rate 0.07. On 2000 Quora pairs (meancache, noisy labels) it
lifts precision at 0.75 from 0.56 to 0.64. A check takes ~0.16 ms once its word vectors are
cached, ~0.3 ms median with new words.
"""

from __future__ import annotations

import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache

import numpy as np

from faregate.cache.verify_words import (
    ANTONYM_PAIRS,
    AUX,
    BARE_UNITS,
    CARDINALS,
    CONTRACTIONS,
    HOW_X,
    NEG_PREFIXES,
    NEGATIONS,
    PURE_NUMS,
    QWORDS,
    REL,
    ROMAN,
    SCALES,
    STOP,
    SWAP_PREFIXES,
    TOKEN,
    UNITS,
    WH,
    WORD_NUMS,
)

NEAR_IDENTICAL = 0.6  # difflib ratio of the two word sequences from which a pair is a minimal edit
STRICT, ADDED, LOOSE, NAMES = 0.75, 0.3, 0.2, 0.9  # word-vector cosines a match needs (see above)


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str = ""  # "" when ok, else what differs


@dataclass(frozen=True, slots=True)
class _Text:
    words: tuple[str, ...]  # lowercase, numbers and punctuation dropped
    lemmas: tuple[str, ...]
    numbers: frozenset[str]
    units: frozenset[str]
    order: tuple[str, ...]  # numbers and units as they come
    negations: int
    names: frozenset[int]  # indices of capitalised / acronym / camel-case words
    relations: frozenset[tuple[str, str, str]]  # (word before, preposition, word after)
    questions: frozenset[str]  # who / when / where / why / how / "how long" / yes/no


def _lemma(w: str) -> str:
    for suf, rep, min_len in (("ies", "y", 5), ("sses", "ss", 5), ("ing", "", 6), ("ed", "", 5),
                              ("ly", "", 5), ("es", "", 5), ("s", "", 4)):
        if w.endswith(suf) and len(w) >= min_len and not (suf == "s" and w[-2] in "su"):
            w = w[: -len(suf)] + rep
            if suf in ("ing", "ed") and len(w) > 3 and w[-1] == w[-2]:
                w = w[:-1]
            break
    return w[:-1] if len(w) > 4 and w.endswith("e") else w


def _plain(word: str, lemma: str) -> bool:
    """Not a content word: a stopword or a number word."""
    return word in STOP or lemma in STOP or word in WORD_NUMS


@lru_cache(maxsize=8192)
def _parse(text: str) -> _Text:
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")
    for pattern, repl in CONTRACTIONS:
        text = pattern.sub(repl, text)
    toks = TOKEN.findall(text)
    words: list[str] = []
    order: list[str] = []
    names: set[int] = set()
    numbers: set[str] = set()
    units: set[str] = set()
    last_cap = after_num = False
    initial, acc = True, 0.0
    for i, tok in enumerate(toks):
        low, nxt = tok.lower(), (toks[i + 1].lower() if i + 1 < len(toks) else "")
        if tok in ".?!:;":
            initial = True
            continue
        if tok[0].isdigit() or (tok == "%" and after_num):
            value = "%" if tok == "%" else tok.replace(",", "")
            value = value if "." in value or value == "%" else str(int(value))
            (units if value == "%" else numbers).add(value)
            order.append(value)
            after_num, initial, last_cap = True, False, False
            continue
        if ROMAN.match(tok) or (tok == "I" and last_cap and not nxt.isalpha()):
            value = sum({"I": 1, "V": 5, "X": 10}[c] for c in tok)
            numbers.add(str(value - 2 * tok.count("IV") - 2 * tok.count("IX")))
            order.append(tok)
            continue
        if after_num and low in ("st", "nd", "rd", "th"):
            continue
        if low in SCALES or (low in WORD_NUMS and not (low == "second" and after_num)):
            acc = max(acc, 1.0) * SCALES[low] if low in SCALES else acc + WORD_NUMS[low]
            if low not in CARDINALS or nxt not in CARDINALS:
                if acc != 1 or low not in ("one", "first"):  # a lone written 1 is like "a"
                    numbers.add(f"{acc:g}")
                    order.append(f"{acc:g}")
                acc = 0.0
            if low in PURE_NUMS:
                after_num, initial = True, False
                continue
        unit = (UNITS[low] if after_num else None) if low in BARE_UNITS else (
            UNITS.get(low) or UNITS.get(low[:-1] if low[-1] == "s" else "")
            or UNITS.get(_lemma(low)))
        units.update([unit] if unit else [])
        order.extend([unit] if unit else [])
        cap = tok[0].isupper() and tok != "I" and not unit
        plain = low in STOP or low in WORD_NUMS
        if (cap and not initial and (not plain or tok.isupper())) or (
                not plain and any(c.isupper() for c in tok[1:])):
            names.add(len(words))
        last_cap, after_num, initial = cap and not initial, False, False
        words.append(low)
    lemmas = tuple(_lemma(w) for w in words)
    content = [j for j in range(len(words)) if not _plain(words[j], lemmas[j])]
    relations: set[tuple[str, str, str]] = set()
    for i, w in enumerate(words):
        after = [j for j in content if j > i]
        if w in REL and after:
            before = [j for j in content if j < i]
            rel = {"into": "to", "to": "to", "from": "from", "than": "than"}.get(w, "rel")
            relations.add((lemmas[before[-1]] if before else "", rel, lemmas[after[0]]))
    questions = {QWORDS[w] for w in words if w in QWORDS}
    for w, nxt in zip(words, [*words[1:], ""], strict=False):
        questions.update([f"how {nxt}" if nxt in HOW_X else "how"] if w == "how" else [])
    if words and words[0] in AUX and not WH.intersection(words):
        questions.add("yes/no")
    return _Text(tuple(words), lemmas, frozenset(numbers), frozenset(units), tuple(order),
                 sum(w in NEGATIONS for w in words), frozenset(names), frozenset(relations),
                 frozenset(questions))


def _antonyms(x: str, y: str) -> bool:
    if y in _ANTONYMS.get(x, ()) or _lemma(y) in _ANTONYMS.get(_lemma(x), ()):
        return True
    for a, b in ((x, y), (y, x)):
        if any(a == p + b and len(b) >= (4 if p == "a" else 3) for p in NEG_PREFIXES):
            return True
        if len(a) > 4 and any(a.startswith(p) and b.startswith(q) and a[len(p):] == b[len(q):]
                              for p, q in SWAP_PREFIXES):
            return True
    return False


_ANTONYMS: dict[str, set[str]] = {}
for _x, _y in zip(ANTONYM_PAIRS[::2], ANTONYM_PAIRS[1::2], strict=True):
    for _a, _b in ((_x, _y), (_y, _x), (_lemma(_x), _lemma(_y)), (_lemma(_y), _lemma(_x))):
        _ANTONYMS.setdefault(_a, set()).add(_b)


def _questions_conflict(x: str, y: str) -> bool:
    kinds = {x, y}
    if "why" in kinds:
        return True
    if kinds <= {"how", "yes/no"} or kinds & {"how many", "how much"}:
        return False
    return not kinds & {"how", "yes/no"}


def _direction(a: _Text, b: _Text) -> str:
    for x, rel, y in a.relations:  # "string to list" vs "list to string" (not "list from string")
        if x and x != y and (y, rel, x) in b.relations and (x, rel, y) not in b.relations:
            return f"roles swapped: {_word(a, x)} / {_word(a, y)}"
    for p, q in ((a, b), (b, a)):  # "to X" vs "from X"; "than X" vs X on the other side
        for rel, opposite in (("to", "from"), ("from", "to"), ("than", "than")):
            there = {y for _, r, y in q.relations if r == rel}
            flipped = {y for _, r, y in q.relations if r == opposite} - there
            if rel == "than" and there:
                flipped = set(q.lemmas) - there
            for y in {y for _, r, y in p.relations if r == rel} - there:
                if y in flipped:
                    return f"direction differs: {_word(p, y)}"
    return ""


def _rules(a: _Text, b: _Text) -> str:
    """The reason of the first rule before the word match that rejects, else ""."""
    if a.numbers != b.numbers:
        return f"numbers differ: {_fmt(a.numbers)} vs {_fmt(b.numbers)}"
    if a.units and b.units and a.units != b.units:
        return f"units differ: {_fmt(a.units)} vs {_fmt(b.units)}"
    oa, ob = tuple(dict.fromkeys(a.order)), tuple(dict.fromkeys(b.order))  # "3.10 than 3.11"
    ways = [{"to", "into", "from", "than"}.intersection(t.words) for t in (a, b)]
    if oa != ob and len(oa) > 1 and sorted(oa) == sorted(ob) and ways[0] and ways[0] == ways[1]:
        return f"direction differs: {' '.join(oa)} vs {' '.join(ob)}"
    if a.negations % 2 != b.negations % 2:
        return "negation differs"
    da, db = _diff(a, b), _diff(b, a)
    if pair := next(((x, y) for x in da for y in db if _antonyms(x, y)), None):
        return f"antonyms: {pair[0]} vs {pair[1]}"
    for x in sorted(a.questions - b.questions):
        for y in sorted(b.questions - a.questions):
            if _questions_conflict(x, y):
                return f"question differs: {x} vs {y}"
    return _direction(a, b)


def _word(t: _Text, lemma: str) -> str:
    return t.words[t.lemmas.index(lemma)]


def _fmt(values: frozenset[str]) -> str:
    return ", ".join(sorted(values)) or "none"


def _diff(p: _Text, q: _Text) -> list[str]:
    """Words of p, stopwords included, whose lemma q does not have."""
    ql, qw = set(q.lemmas), set(q.words)
    return [w for w, lem in zip(p.words, p.lemmas, strict=True) if lem not in ql and w not in qw]


def _edit1(a: str, b: str) -> bool:
    """One substitution, insertion, deletion or swap of neighbours apart."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return a == b
    i = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
    return a[i + 1:] == b[i + 1:] or a[i:] == b[i + 1:] or a[i + 1:] == b[i:] or (
        a[i:i + 2] == b[i:i + 2][::-1] and a[i + 2:] == b[i + 2:])


def _unmatched(p: _Text, q: _Text) -> list[int]:
    """Indices of p's content words and names that q has in no form."""
    ql, qw = set(q.lemmas), set(q.words)
    joined = {x + y for x, y in zip(q.words, q.words[1:], strict=False)}
    out = []
    for i, (w, lem) in enumerate(zip(p.words, p.lemmas, strict=True)):
        if (_plain(w, lem) and i not in p.names) or w in NEGATIONS or lem in ql or w in qw or (
                w in HOW_X and i and p.words[i - 1] == "how") or w in joined:
            continue
        if (i + 1 < len(p.words) and w + p.words[i + 1] in qw) or (
                i and p.words[i - 1] + w in qw):
            continue
        if not any(_similar_form(w, x) for x in qw):
            out.append(i)
    return out


def _similar_form(w: str, x: str) -> bool:
    """A typo of a long word, or an abbreviation (int / integer, auto / automatic)."""
    if len(w) >= 5 and len(x) >= 5 and _edit1(w, x) and not _antonyms(w, x):
        return True
    short, long_ = sorted((w, x), key=len)
    return len(short) >= 3 and long_.startswith(short) and len(short) >= 0.4 * len(long_)


class Verifier:
    """Whether a cached text asks what a query asks; the rules are in the module docstring.

    word_vectors embeds single words (LocalEmbedder.embed) to accept near-synonyms; the vectors
    are kept in an LRU of cache_size entries, so a check embeds only words it has not seen, in one
    call. Without it, every content word of one side must occur on the other in some form. Not
    thread-safe (the LRU): use one Verifier per thread or event loop.
    """

    def __init__(self, word_vectors: Callable[[list[str]], np.ndarray] | None = None,
                 cache_size: int = 20_000) -> None:
        self._embed = word_vectors
        self._cache_size = cache_size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()

    def check(self, query: str, cached: str) -> Verdict:
        a, b = _parse(query), _parse(cached)
        if reason := _rules(a, b):
            return Verdict(False, reason)
        ua, ub = _unmatched(a, b), _unmatched(b, a)
        if not ua and not ub:
            return Verdict(True)
        # how near a synonym must be depends on where the word is (module docstring)
        matcher = SequenceMatcher(None, a.lemmas, b.lemmas, autojunk=False)
        near_identical = matcher.ratio() >= NEAR_IDENTICAL
        need_a: dict[int, float] = {}
        need_b: dict[int, float] = {}
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            need = STRICT if near_identical else LOOSE if tag == "replace" else ADDED
            need_a.update(dict.fromkeys(range(i1, i2), need))
            need_b.update(dict.fromkeys(range(j1, j2), need))
        ta, tb = _targets(a), _targets(b)
        vectors = self._lookup([*ta, *tb]) if self._embed is not None else {}
        reason = _match(a, b, ua, ub, need_a, tb, vectors) or _match(
            b, a, ub, ua, need_b, ta, vectors)
        return Verdict(not reason, reason)

    def _lookup(self, texts: list[str]) -> dict[str, np.ndarray]:
        cache = self._vectors
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing and self._embed is not None:  # one embedder call for all new words
            for t, v in zip(missing, self._embed(missing), strict=True):
                cache[t] = np.asarray(v, dtype=np.float32)
        for t in texts:
            cache.move_to_end(t)
        out = {t: cache[t] for t in texts}
        while len(cache) > self._cache_size:
            cache.popitem(last=False)
        return out


def _targets(q: _Text) -> list[str]:
    """What a word of the other side may match: q's content words and names."""
    return [w for j, (w, lem) in enumerate(zip(q.words, q.lemmas, strict=True))
            if not _plain(w, lem) or j in q.names]


def _match(p: _Text, q: _Text, up: list[int], uq: list[int], need: dict[int, float],
           targets: list[str], vectors: dict[str, np.ndarray]) -> str:
    """Why one of p's unmatched words has no near-synonym among targets, else ""."""

    def best(text: str) -> float:  # an antonym is never a synonym
        found = [vectors[t] for t in targets if not _antonyms(text, t) and t in vectors]
        if text not in vectors or not found:
            return -1.0
        return float(np.max(np.stack(found) @ vectors[text]))

    failed = [i for i in up if best(p.words[i]) < (NAMES if i in p.names else need.get(i, STRICT))]
    if not failed:
        return ""
    word = p.words[failed[0]]
    if failed[0] not in p.names:
        return f"content word unmatched: {word}"
    other = [q.words[j] for j in uq if j in q.names] or [q.words[j] for j in uq]
    return f"entity differs: {word} vs {other[0]}" if other else f"entity unmatched: {word}"
