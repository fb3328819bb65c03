"""Presidio's analyzer as the request log uses it: regex recognizers only, no NLP model.

Imported only by `Redactor.load()` (in a worker thread): importing Presidio takes ~1 s and
~100 MB (it imports spaCy, though no spaCy model is loaded or downloaded).

The set-up Presidio documents for recognizers that need no NLP artifacts: an `AnalyzerEngine`
over a `NoOpNlpEngine`, with an explicit `RecognizerRegistry`. Stock recognizers, adjusted
where a redactor wants something else than a detector does (a miss leaks; a false hit only
hides a few characters), or where they were slow:
- e-mail: no top-level-domain check (Presidio's asks tldextract, which fetches the Public
  Suffix List over the network on first use; and `bob@corp.internal` is an address too);
- US SSN: the published sample numbers (078-05-1120…) count too;
- phone, e-mail, IP: run only on windows around what could start one (a run of 6-15 digits
  with phone punctuation; an `@`; digits around a dot or hex around colons): the phone matcher
  scans the text once per region (8 of them, ~10 ms per 3 kB of text) and the e-mail and IPv6
  patterns backtrack at every word; windows make a body without candidates nearly free;
- no context enhancement (a no-op NLP engine produces no tokens or lemmas for it to use).
`API_KEY` is faregate's own pattern recognizer (see `API_KEY_PATTERNS`).
"""

from __future__ import annotations

import re
from typing import Any

import phonenumbers
from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
from presidio_analyzer.nlp_engine import NoOpNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    UsSsnRecognizer,
)

# Provider keys, bearer tokens, cloud and SaaS tokens, JWTs, and a long mixed letters-and-digits
# token shortly after a word that announces a secret ("api_key=…", "token: …", "my secret is
# …"). Where a pattern has a group `s`, only that part is replaced ("Bearer <API_KEY>").
API_KEY_PATTERNS: tuple[tuple[str, str], ...] = (
    ("provider key", r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{16,}"),
    ("bearer token", r"(?i:\bbearer)\s{1,4}(?P<s>[A-Za-z0-9._~+/\-]{7,}[A-Za-z0-9_~+/\-]=*)"),
    ("aws access key", r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b"),
    ("github token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"),
    ("google api key", r"\bAIza[0-9A-Za-z_\-]{35}"),
    ("slack token", r"\bxox[abprse]-[A-Za-z0-9\-]{10,}"),
    ("jwt", r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    ("token after keyword",
     r"(?i:\b(?:api[_ \-]?key|access[_ \-]?key|secret(?:[_ \-]?key)?|token|password|passwd"
     r"|credential|key)s?)\W{0,4}(?:(?i:is|was|are)\W{1,4})?"
     r"(?P<s>(?=[A-Za-z+/_.\-]*[0-9])(?=[0-9+/_.\-]*[A-Za-z])[A-Za-z0-9+/_.\-]{15,}[A-Za-z0-9+/_\-]={0,2})"),
)
API_KEY_SCORE = 0.9

_PHONE = re.compile(r"\+?\(?\d(?:[ \t().\-/]{0,3}\d){5,}")
_AT = re.compile(r"@")
_IP = re.compile(r"\d\.\d{1,3}\.\d|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:")
_TOKENISH = re.compile(r"[\w\-+/.=~]{15,}")  # every API_KEY pattern but `bearer` matches within one
_SAMPLE_SSNS = frozenset({"078051120", "123456789", "987654320"})


def analyzer(entities: list[str]) -> AnalyzerEngine:
    made = {"EMAIL_ADDRESS": Email, "PHONE_NUMBER": Phone, "CREDIT_CARD": CreditCardRecognizer,
            "IBAN_CODE": IbanRecognizer, "IP_ADDRESS": Ip, "US_SSN": Ssn, "API_KEY": ApiKey}
    registry = RecognizerRegistry(supported_languages=["en"])
    for entity in dict.fromkeys(entities):
        registry.add_recognizer(made[entity]())
    nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    return AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"],
                          context_aware_enhancer=NoContext())


def windows(text: str, candidate: re.Pattern[str], before: int, after: int) -> list[tuple[int, int]]:
    """Merged [lo, hi) ranges around each candidate match."""
    out: list[tuple[int, int]] = []
    n = len(text)
    for m in candidate.finditer(text):
        lo, hi = max(0, m.start() - before), min(n, m.end() + after)
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return out


def _in_windows(analyze: Any, text: str, spans: list[tuple[int, int]], *args: Any) -> list[RecognizerResult]:
    """`analyze` (a recognizer's own) on each window, results in `text`'s offsets."""
    results: list[RecognizerResult] = []
    for lo, hi in spans:
        for r in analyze(text[lo:hi], *args):
            r.start += lo
            r.end += lo
            results.append(r)
    return results


class Email(EmailRecognizer):
    def validate_result(self, pattern_text: str) -> bool | None:
        return None  # keep the pattern's score: no tldextract, no network

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None,
                regex_flags: int | None = None) -> list[RecognizerResult]:
        # A local part has at most 64 characters, a domain at most 253.
        return _in_windows(super().analyze, text, windows(text, _AT, 65, 254), entities, nlp_artifacts, regex_flags)


class Ip(IpRecognizer):
    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None,
                regex_flags: int | None = None) -> list[RecognizerResult]:
        # The longest address form (IPv4-mapped IPv6 with a prefix) is under 50 characters.
        return _in_windows(super().analyze, text, windows(text, _IP, 50, 50), entities, nlp_artifacts, regex_flags)


class Ssn(UsSsnRecognizer):
    def invalidate_result(self, pattern_text: str) -> bool:
        if "".join(c for c in pattern_text if c.isdigit()) in _SAMPLE_SSNS:
            return False
        return bool(super().invalidate_result(pattern_text))


class Phone(PhoneRecognizer):
    """python-phonenumbers on windows around digit runs: an international number (`+…`)
    parses the same from any region, so one pass; a national one is tried in every region."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        results: list[RecognizerResult] = []
        for m in _PHONE.finditer(text):
            digits = sum(c.isdigit() for c in m.group())
            if digits > 15:  # longer than any E.164 number (a card number, an id)
                continue
            lo, hi = max(0, m.start() - 8), min(len(text), m.end() + 8)
            window = text[lo:hi]
            regions = self.supported_regions[:1] if m.group().startswith("+") else self.supported_regions
            for region in regions:
                for match in phonenumbers.PhoneNumberMatcher(window, region, leniency=self.leniency):
                    r = self._get_recognizer_result(match, window, region, nlp_artifacts)
                    r.start += lo
                    r.end += lo
                    results.append(r)
        return EntityRecognizer.remove_duplicates(results)


class ApiKey(PatternRecognizer):
    """faregate's API_KEY recognizer. A PatternRecognizer (its patterns show in Presidio's
    `to_dict`), whose `analyze` reports group `s`'s span when a pattern has one, so the words
    around a secret stay readable."""

    def __init__(self) -> None:
        super().__init__(supported_entity="API_KEY", name="ApiKeyRecognizer",
                         patterns=[Pattern(n, rx, API_KEY_SCORE) for n, rx in API_KEY_PATTERNS])
        compiled = {name: re.compile(rx) for name, rx in API_KEY_PATTERNS}
        self._bearer = compiled.pop("bearer token")  # tokens from 8 characters: on the whole text
        self._compiled = list(compiled.values())

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None,
                regex_flags: int | None = None) -> list[RecognizerResult]:
        results = self._find(text, self._bearer, 0)
        # The keyword that announces a token stands at most ~40 characters before it.
        for lo, hi in windows(text, _TOKENISH, 40, 0):
            window = text[lo:hi]
            for rx in self._compiled:
                results += self._find(window, rx, lo)
        return EntityRecognizer.remove_duplicates(results)

    def _find(self, text: str, rx: re.Pattern[str], shift: int) -> list[RecognizerResult]:
        meta = {RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}
        out = []
        for m in rx.finditer(text):
            start, end = m.span("s") if "s" in rx.groupindex else m.span()
            out.append(RecognizerResult("API_KEY", start + shift, end + shift, API_KEY_SCORE,
                                        recognition_metadata=dict(meta)))
        return out


class NoContext(ContextAwareEnhancer):
    """No tokens or lemmas come from a no-op NLP engine: skip the enhancer's work."""

    def __init__(self) -> None:
        super().__init__(context_similarity_factor=0, min_score_with_context_similarity=0,
                         context_prefix_count=0, context_suffix_count=0)

    def enhance_using_context(self, text: str, raw_results: list[RecognizerResult], nlp_artifacts: Any,
                              recognizers: list[EntityRecognizer], context: Any = None) -> list[RecognizerResult]:
        return raw_results
