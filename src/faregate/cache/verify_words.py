"""The word tables of the same-intent check (cache/verify.py): stopwords, negations, question
words, general English antonym pairs and prefixes, units and written numbers, contractions.
General English only: nothing here lists the evaluation set's words."""

from __future__ import annotations

import re


def _w(text: str, sep: str | None = None) -> list[str]:
    return [t.strip() for t in text.split(sep)]


# Words that never change what a question asks for: function words, question scaffolding, light
# verbs, fillers. Prepositions are here too; the antonym and direction rules read them.
STOP = frozenset(_w("""
    a an the and or but if then so that this these those there here it its i me my mine we our us
    you your he she his her they them their what which who whom whose when where why how whether
    is are was were be been being am do does did doing done have has had having can could would
    should will shall may might must of in on at by for with about as into onto to from up down
    out off over under than via per during while until since because through between among within
    against across around toward towards also just really actually very still ever any some all
    every each much many more most such other another own same please thanks hi hello get gets
    got getting make makes made making want wants need needs like know tell explain way ways
    possible ok okay best easiest proper correct right someone anyone somebody something anything
    thing things use using used take takes taking took happen happens happened number instead
    anymore now go going come came able let see find look show give put mean means meaning
    consider considered exist exists offer provide available help step steps process method
    option options kind usual usually typical typically generally commonly real actual certain
    specific particular exact exactly whatever given people person currently once"""))
NEGATIONS = frozenset(_w("not no never without none nobody nothing neither nor non cannot unable "
                          "lack fail fails failed"))
QWORDS = {"who": "who", "whom": "who", "whose": "who", "when": "when", "where": "where",
           "why": "why"}
HOW_X = frozenset(_w("long many much far old often big tall fast large soon"))
WH = frozenset(_w("what which who whom whose when where why how"))
AUX = frozenset(_w("is are was were am can could should would will shall do does did has have "
                    "had may might must"))
REL = frozenset(_w("of with on per for at in by to into from than"))
ANTONYM_PAIRS = _w("""
    enable disable increase decrease before after max min maximum minimum allow forbid allow deny
    allowed forbidden open close open closed on off in out up down add remove add delete add drop
    buy sell start stop start end begin end first last first latest earliest latest high low
    higher lower highest lowest raise lower hot cold big small bigger smaller biggest smallest
    large small larger smaller largest smallest more less most least more fewer best worst better
    worse early late earlier later male female man woman men women boy girl boys girls push pull
    send receive win lose gain lose gain loss profit loss true false left right north south east
    west old new older newer oldest newest young old fast slow quick slow quickly slowly long
    short inner outer accept reject approve reject approve deny public private plus minus positive
    negative ascending descending incoming outgoing upper lower light dark light heavy wet dry
    cheap expensive rise fall arrive depart arrival departure entry exit enter exit login logout
    hide show hidden visible expand collapse merge split attach detach freeze thaw freeze melt
    freezing melting pause resume create delete create destroy insert delete read write push pop
    head tail front back top bottom above below inside outside summer winter spring autumn
    morning evening day night sunrise sunset even odd empty full online offline sync async static
    dynamic local remote client server grow shrink wide narrow thick thin deep shallow strong weak
    hard soft easy difficult success failure pass fail safe dangerous acute chronic benign
    malignant inhale exhale sender recipient buyer seller parent child previous next past future
    yesterday tomorrow always never warm cool heating cooling lend borrow debit credit deposit
    withdraw income expense forward backward horizontal vertical horizontally vertically row
    column width height temporary permanent temporarily permanently manual automatic manually
    automatically single multiple singular plural union intersection accept decline inclusive
    exclusive near far nearest farthest closest farthest closer farther husband wife brother
    sister mother father son daughter uncle aunt king queen boyfriend girlfriend he she his her""")
NEG_PREFIXES = _w("un dis non de in im il ir anti re mis a")
SWAP_PREFIXES = [_w(p, "/") for p in _w("up/down in/out en/de im/ex in/ex hypo/hyper under/over "
                                         "pre/post in/de inter/intra upper/lower")]
UNITS = {u: c.split()[0] for c in _w("""mg milligram|g gram|kg kilogram kilo|mcg microgram|
    ml milliliter millilitre|l liter litre|km kilometer kilometre|m meter metre|
    cm centimeter centimetre|mm millimeter millimetre|mile mi|ft foot feet|inch inches|yd yard|
    lb lbs pound|oz ounce|ton tonne|gb gigabyte|mb megabyte|kb kilobyte|tb terabyte|
    ms millisecond|sec second|min minute|h hr hour|day|week|month|year yr|decade|century|
    % percent|c celsius centigrade|f fahrenheit|kelvin|cup|tsp teaspoon|tbsp tablespoon|gallon|
    pint|kcal calorie|mph|kph kmh|watt|volt|hz|ghz|mhz|px pixel|byte""", "|") for u in c.split()}
BARE_UNITS = frozenset(_w("g l m mi ms sec second min h hr c f"))  # units only after a number
SMALL = _w("zero one two three four five six seven eight nine ten eleven twelve thirteen "
            "fourteen fifteen sixteen seventeen eighteen nineteen")
TENS = _w("twenty thirty forty fifty sixty seventy eighty ninety")
WORD_NUMS = {w: float(i) for i, w in enumerate(SMALL)} | {
    w: float(10 * i) for i, w in enumerate(TENS, 2)} | {
    "first": 1, "second": 2, "twice": 2, "double": 2, "third": 3,
    "thrice": 3, "triple": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "dozen": 12, "half": 0.5, "quarter": 0.25}
SCALES = {"hundred": 100.0, "thousand": 1e3, "million": 1e6, "billion": 1e9}
CARDINALS = frozenset([*SMALL, *TENS, *SCALES])  # compound: "twenty five", "a hundred"
PURE_NUMS = CARDINALS | {"dozen", "twice"}  # not kept as words
ROMAN = re.compile(r"^(?=[IVX]{2,})X{0,3}(IX|IV|V?I{0,3})$")
TOKEN = re.compile(r"[A-Za-z]+|\d+(?:,\d{3})*(?:\.\d+)*|%|[.?!:;]")
CONTRACTIONS = [(re.compile(p, re.I), r) for p, r in (
    (r"\bcan'?t\b", "can not"), (r"\bwon'?t\b", "will not"), (r"n't\b", " not"),
    (r"\b(do|does|did|is|are|was|were|have|has|had|could|should|would|must)nt\b", r"\1 not"),
    (r"'re\b", " are"), (r"'ve\b", " have"), (r"'ll\b", " will"), (r"'d\b", " would"),
    (r"'m\b", " am"), (r"'s\b", ""), (r"\b([a-z])\+\+", r"\1plusplus"),
    (r"\b([a-z])#", r"\1sharp"))]
