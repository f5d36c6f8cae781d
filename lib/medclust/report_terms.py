"""Finding terms from free-text radiology reports, with NegEx-style negation (study 05).

The population-clustering paper on routine lung CT (Hofmanninger et al., Sec. 3, "Term
extraction") searches each report for words and synonyms of pathological findings, maps them to
their RadLex term, ignores explicitly negated terms, and keeps the terms that occur in more than
50 reports (T = 69 of 5,886 reports). This module implements that pipeline:

1. **Lexicon.** ``data/radiology_lexicon.csv`` (package data) holds one row per (concept id,
   surface form): columns ``term`` (RadLex-style snake_case concept id), ``synonym`` (lowercase
   surface form) and ``category`` (organ/site). It was written for this project; the concept ids
   are not RadLex RIDs. Any table with ``term`` and ``synonym`` columns (or a mapping
   ``{term: [synonyms]}``) can replace it.
2. **Normalisation.** Text is split into sentences (``.``, ``!``, ``?`` followed by white space,
   a blank line, or a line break followed by a capital letter, a bullet or a list number; a
   single line break inside a sentence is a space, as in hard-wrapped reports; ``e.g.``, ``vs.``,
   ``approx.`` ... do not end a sentence). Words are lowercased, hyphens, slashes and other
   punctuation separate words (``ground-glass`` = ``ground glass``), contractions are expanded
   (``isn't`` -> ``is not``, ``can't`` -> ``cannot``) and every word is reduced to its singular by
   a few English rules plus a list of Latin/Greek plurals (``opacities`` -> ``opacity``,
   ``bullae`` -> ``bulla``, ``metastases`` -> ``metastasis``). Lexicon synonyms and negation
   triggers go through the same normalisation, so plurals and hyphen/space variants need no
   rows of their own.
3. **Term matching.** Greedy leftmost-longest match of synonym word sequences on whole words,
   within a sentence: ``pericardial effusion`` is not a ``pleural_effusion``, ``ground-glass
   nodule`` is a ``nodule``, and ``massive`` is not ``mass`` (word boundaries).
4. **Negation** follows NegEx (Chapman et al., "A simple algorithm for identifying negated
   findings and diseases in discharge summaries", J Biomed Inform 34:301-310, 2001):

   - *pre-negation* triggers (``no``, ``without``, ``no evidence of``, ``negative for``, ``free
     of``, ``absence of``, ``rules out`` ...) negate terms that start within ``scope_window``
     words after them (5 by default, as in NegEx);
   - *post-negation* triggers (``is absent``, ``was ruled out``, ``not seen``, ``no longer``,
     ``has resolved``, ``unlikely`` ...) negate terms that end within ``scope_window`` words
     before them;
   - *pseudo-negations* contain a trigger but negate nothing and end the scope of an earlier
     trigger: ``no change in the nodule`` and ``no increase in the effusion`` report a present
     nodule/effusion, and ``cannot be excluded`` / ``not ruled out`` are hedges, not negations;
   - *termination* terms (``but``, ``however``, ``although``, ``except``, ``;``, ``there is``,
     ``and the`` ...) end a scope;
   - a *conjunction* rule carries a negation along a list past the window: a term joined to a
     negated term by ``,``/``or``/``nor``/``and`` and at most two modifier words (``no
     effusion, pneumothorax, consolidation, focal airspace disease or suspicious nodule``) is
     negated by the same trigger.

   Choices: hedged mentions (``possible nodule``, ``suspicious for pneumonia``, ``pneumonia
   cannot be excluded``) and historical ones count as mentioned; ``unlikely`` negates (a NegEx
   post-negation trigger). A term mentioned both negated and affirmed in one report (``no new
   nodule; the known nodule is stable``) is present. Sentence-level scope means the usual NegEx
   limitations remain (e.g. a negated list that runs into an affirmed clause without a
   termination term).

``term_matrix`` turns reports into a cases x terms 0/1 table, ``frequent_terms`` keeps the terms
found in more than ``min_count`` reports (the paper: > 50), and ``extraction_scores`` measures
micro/per-term precision and recall against ground-truth findings (e.g. a phantom's
``finding_<name>`` columns).
"""

from __future__ import annotations

import bisect
import functools
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medclust.validation import check_int

log = logging.getLogger(__name__)

LEXICON_RESOURCE = "radiology_lexicon.csv"
DEFAULT_SCOPE_WINDOW = 5
MAX_CONJUNCTION_MODIFIERS = 2

# NegEx trigger lists (Chapman et al. 2001, extended with radiology phrasing). Written in plain
# English: they go through the same normalisation as report text ("rules out" == "rule out").
PRE_NEGATION = (
    "no",
    "not",
    "without",
    "with no",
    "never",
    "neither",
    "nor",
    "no evidence of",
    "no evidence for",
    "without evidence of",
    "no sign of",
    "no signs of",
    "no finding of",
    "no findings of",
    "no suggestion of",
    "no suspicious",
    "no definite",
    "negative for",
    "free of",
    "absence of",
    "rules out",
    "exclusion of",
    "resolution of",
)
POST_NEGATION = (
    "absent",
    "is absent",
    "are absent",
    "was absent",
    "were absent",
    "ruled out",
    "was ruled out",
    "is ruled out",
    "has been ruled out",
    "excluded",
    "not seen",
    "not visualized",
    "not visualised",
    "not identified",
    "not demonstrated",
    "not detected",
    "not present",
    "not appreciated",
    "no longer",
    "resolved",
    "has resolved",
    "have resolved",
    "unlikely",
    "none",
    "negative",
)
PSEUDO_NEGATION = (
    "no change",
    "no interval change",
    "no significant change",
    "no significant interval change",
    "no substantial change",
    "no relevant change",
    "no definite change",
    "no increase",
    "no significant increase",
    "no decrease",
    "no growth",
    "no progression",
    "no regression",
    "without change",
    "without interval change",
    "without significant change",
    "not only",
    "not necessarily",
    "not cause",
    "not drain",
    "not extend",
    "not certain if",
    "not certain whether",
    "gram negative",
    "cannot be excluded",
    "not be excluded",
    "not excluded",
    "not been excluded",
    "cannot exclude",
    "not exclude",
    "cannot be ruled out",
    "not be ruled out",
    "not ruled out",
    "not been ruled out",
    "cannot rule out",
    "not rule out",
)
TERMINATION = (
    ";",
    "but",
    "however",
    "although",
    "though",
    "yet",
    "whereas",
    "nevertheless",
    "still",
    "which",
    "except",
    "except for",
    "apart from",
    "aside from",
    "other than",
    "with the exception of",
    "there is",
    "there are",
    "there was",
    "there were",
    "and a",
    "and an",
    "and the",
    "and there",
)
CONJUNCTIONS = frozenset({",", "or", "nor", "and"})

# ---------------------------------------------------------------------------------------------
# normalisation

_IRREGULAR_PLURALS = {
    "bullae": "bulla",
    "emboli": "embolus",
    "thrombi": "thrombus",
    "bronchi": "bronchus",
    "bronchioli": "bronchiolus",
    "diverticula": "diverticulum",
    "granulomata": "granuloma",
    "metastases": "metastasis",
    "atelectases": "atelectasis",
    "bronchiectases": "bronchiectasis",
    "stenoses": "stenosis",
    "fibroses": "fibrosis",
    "thromboses": "thrombosis",
    "diagnoses": "diagnosis",
    "pneumothoraces": "pneumothorax",
    "hydrothoraces": "hydrothorax",
    "vertebrae": "vertebra",
}
# words ending in s that are not plurals (and short function words, left alone)
_NOT_PLURAL = frozenset(
    {
        "this", "does", "perhaps", "series", "species", "lens", "always", "whereas",
        "pancreas", "atlas", "bias", "chaos", "pathos",
    }
)  # fmt: skip
_NOT_PLURAL_ENDINGS = ("ss", "us", "is")


def normalize_word(word: str) -> str:
    """Lowercase singular form of one word (a few English rules plus Latin/Greek plurals).

    The rules need not be linguistically perfect, only consistent: report text, lexicon
    synonyms and negation triggers all go through this function.
    """
    word = word.lower()
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if len(word) <= 3 or word in _NOT_PLURAL or word.endswith(_NOT_PLURAL_ENDINGS):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


def _expand(raw: str) -> list[str]:
    """Words of one raw token: contractions expanded, possessive ``'s`` and apostrophes dropped."""
    raw = raw.lower().replace("\u2019", "'")
    if raw.endswith("n't"):
        stem = raw[:-3]
        if stem == "ca":
            return ["cannot"]
        if stem == "wo":
            return ["will", "not"]
        return [stem.replace("'", ""), "not"]
    if raw.endswith("'s"):
        raw = raw[:-2]
    return [raw.replace("'", "")]


_TOKEN_RE = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*|[,;]")
_END_PUNCT_RE = re.compile(r"[.!?]+(?=\s|$)")
_LINE_BREAK_RE = re.compile(r"\n[ \t]*\n|\n(?=[ \t]*(?:[-*\u2022]|\d+[.)]\s|[A-Z]))")
_WORD_BEFORE_RE = re.compile(r"([^\W_]+(?:\.[^\W_]+)*)$")
_ABBREVIATIONS = frozenset(
    {"e.g", "i.e", "vs", "approx", "ca", "cf", "dr", "fig", "resp", "incl", "max", "min"}
)


class Token(NamedTuple):
    """One normalised word (or ``,``/``;``) with its character span in the original text."""

    word: str
    start: int
    end: int
    sentence: int


def _sentence_breaks(text: str) -> list[int]:
    """Sorted character offsets at which a new sentence starts (see the module docstring)."""
    breaks = [m.end() for m in _LINE_BREAK_RE.finditer(text)]
    for m in _END_PUNCT_RE.finditer(text):
        if m.group() == ".":
            before = _WORD_BEFORE_RE.search(text[max(0, m.start() - 12) : m.start()])
            if before is not None and before.group(1).lower() in _ABBREVIATIONS:
                continue
        breaks.append(m.end())
    return sorted(set(breaks))


def tokenize(text: str) -> list[Token]:
    """Normalised word tokens of ``text`` with sentence numbers and character spans.

    A contraction gives two tokens with the same span (``isn't`` -> ``is``, ``not``).
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    breaks = _sentence_breaks(text)
    tokens = []
    for m in _TOKEN_RE.finditer(text):
        sentence = bisect.bisect_right(breaks, m.start())
        raw = m.group()
        words = [raw] if raw in ",;" else [normalize_word(w) for w in _expand(raw) if w]
        tokens.extend(Token(w, m.start(), m.end(), sentence) for w in words)
    return tokens


def _phrase_key(phrase: str) -> tuple[str, ...]:
    return tuple(t.word for t in tokenize(phrase))


# ---------------------------------------------------------------------------------------------
# lexicon

_TERM_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Lexicon:
    """A compiled lexicon: normalised synonym word sequences -> concept id.

    ``terms`` lists the concept ids in the order of first appearance in the source table (the
    column order of ``term_matrix``); ``max_len`` is the longest synonym in words.
    """

    patterns: Mapping[tuple[str, ...], str]
    terms: tuple[str, ...]
    max_len: int

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, source: str = "lexicon") -> Lexicon:
        """Compile a table with columns ``term`` and ``synonym`` (other columns are ignored)."""
        missing = {"term", "synonym"} - set(frame.columns)
        if missing:
            raise ValueError(f"{source}: missing column(s) {sorted(missing)}")
        if frame.empty:
            raise ValueError(f"{source}: the lexicon is empty")
        patterns: dict[tuple[str, ...], str] = {}
        terms: dict[str, None] = {}
        for row, (term, synonym) in enumerate(zip(frame["term"], frame["synonym"], strict=True)):
            if not isinstance(term, str) or not _TERM_ID_RE.match(term):
                raise ValueError(f"{source}: row {row}: term must be a snake_case id, got {term!r}")
            key = _phrase_key(synonym) if isinstance(synonym, str) else ()
            if not key:
                raise ValueError(f"{source}: row {row}: synonym must hold words, got {synonym!r}")
            if patterns.get(key, term) != term:
                raise ValueError(
                    f"{source}: synonym {synonym!r} (normalised {' '.join(key)!r}) maps to both "
                    f"{patterns[key]!r} and {term!r}"
                )
            patterns[key] = term
            terms[term] = None
        return cls(patterns, tuple(terms), max(len(k) for k in patterns))

    @classmethod
    def from_csv(cls, path: str | Path) -> Lexicon:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"lexicon file {path} does not exist")
        return cls.from_frame(pd.read_csv(path, comment="#", dtype=str), source=str(path))


@functools.lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    """The package lexicon ``medclust/data/radiology_lexicon.csv`` (compiled once)."""
    resource = files("medclust") / "data" / LEXICON_RESOURCE
    with resource.open("r", encoding="utf-8") as handle:
        frame = pd.read_csv(handle, comment="#", dtype=str)
    return Lexicon.from_frame(frame, source=f"medclust/data/{LEXICON_RESOURCE}")


def load_lexicon(lexicon: Any = None) -> Lexicon:
    """A ``Lexicon`` from ``None`` (the package lexicon), a ``Lexicon``, a DataFrame with
    ``term``/``synonym`` columns, a CSV path, or a mapping ``{term: [synonyms]}``."""
    if lexicon is None:
        return default_lexicon()
    if isinstance(lexicon, Lexicon):
        return lexicon
    if isinstance(lexicon, pd.DataFrame):
        return Lexicon.from_frame(lexicon)
    if isinstance(lexicon, str | Path):
        return Lexicon.from_csv(lexicon)
    if isinstance(lexicon, Mapping):
        rows = []
        for term, synonyms in lexicon.items():
            if isinstance(synonyms, str) or not isinstance(synonyms, Iterable):
                raise ValueError(f"lexicon: synonyms of {term!r} must be a list of strings")
            rows.extend((term, s) for s in synonyms)
        return Lexicon.from_frame(pd.DataFrame(rows, columns=["term", "synonym"]))
    raise ValueError(
        "lexicon must be None, a Lexicon, a DataFrame, a CSV path or a {term: [synonyms]} "
        f"mapping, got {type(lexicon).__name__}"
    )


def _compile_triggers() -> tuple[dict[tuple[str, ...], str], int]:
    table: dict[tuple[str, ...], str] = {}
    for kind, phrases in (
        ("pre", PRE_NEGATION),
        ("post", POST_NEGATION),
        ("pseudo", PSEUDO_NEGATION),
        ("termination", TERMINATION),
    ):
        for phrase in phrases:
            key = _phrase_key(phrase)
            if table.get(key, kind) != kind:
                raise ValueError(f"negation trigger {phrase!r} is both {table[key]} and {kind}")
            table[key] = kind
    return table, max(len(k) for k in table)


_TRIGGERS, _TRIGGER_MAX_LEN = _compile_triggers()


# ---------------------------------------------------------------------------------------------
# matching and negation


class Mention(NamedTuple):
    """One lexicon match: concept id, surface text and character span in the report, sentence
    number, whether it is negated and (if so) the surface text of the negating trigger."""

    term: str
    text: str
    start: int
    end: int
    sentence: int
    negated: bool
    trigger: str | None


class _Span(NamedTuple):
    first: int  # token index, inclusive
    stop: int  # token index, exclusive
    label: str  # concept id or trigger kind


def _longest_matches(words: list[str], table: Mapping[tuple[str, ...], str], max_len: int):
    """Greedy leftmost-longest, non-overlapping matches of ``table`` keys in ``words``."""
    spans, i, n = [], 0, len(words)
    while i < n:
        for length in range(min(max_len, n - i), 0, -1):
            label = table.get(tuple(words[i : i + length]))
            if label is not None:
                spans.append(_Span(i, i + length, label))
                i += length
                break
        else:
            i += 1
    return spans


def _chained(between: list[str]) -> bool:
    """Whether two terms are joined as list items: a conjunction and few modifier words."""
    n_conj = sum(w in CONJUNCTIONS for w in between)
    return n_conj >= 1 and len(between) - n_conj <= MAX_CONJUNCTION_MODIFIERS


def _negate_sentence(words: list[str], terms: list[_Span], events: list[_Span], window: int):
    """Index of the negating trigger event per term (``None`` if affirmed); NegEx rules."""
    # words_before[k]: number of word tokens (not , or ;) among words[:k], for window distances
    is_word = np.array([w not in (",", ";") for w in words], dtype=np.int64)
    words_before = np.concatenate([[0], np.cumsum(is_word)])
    event_stops = [e.stop for e in events]
    event_firsts = [e.first for e in events]
    trigger_of: list[int | None] = [None] * len(terms)

    for j, term in enumerate(terms):  # pre-negation, left to right (conjunction chains)
        k = bisect.bisect_right(event_stops, term.first) - 1
        if k < 0 or events[k].label != "pre":
            continue
        gap = words_before[term.first] - words_before[events[k].stop]
        if gap < window or (
            j > 0 and trigger_of[j - 1] == k and _chained(words[terms[j - 1].stop : term.first])
        ):
            trigger_of[j] = k

    post_of: list[int | None] = [None] * len(terms)
    for j in range(len(terms) - 1, -1, -1):  # post-negation, right to left
        term = terms[j]
        k = bisect.bisect_left(event_firsts, term.stop)
        if k >= len(events) or events[k].label != "post":
            continue
        gap = words_before[events[k].first] - words_before[term.stop]
        if gap < window or (
            j + 1 < len(terms)
            and post_of[j + 1] == k
            and _chained(words[term.stop : terms[j + 1].first])
        ):
            post_of[j] = k
    return [pre if pre is not None else post for pre, post in zip(trigger_of, post_of, strict=True)]


def find_mentions(
    text: str, lexicon: Any = None, scope_window: int = DEFAULT_SCOPE_WINDOW
) -> list[Mention]:
    """Every lexicon term mention in ``text`` with its span and NegEx negation status.

    ``scope_window`` is the NegEx window in words between a trigger and a term (5 as in
    Chapman et al. 2001); see the module docstring for the rules.
    """
    window = check_int("scope_window", scope_window)
    lex = load_lexicon(lexicon)
    tokens = tokenize(text)
    mentions: list[Mention] = []
    first = 0
    while first < len(tokens):
        stop = first
        while stop < len(tokens) and tokens[stop].sentence == tokens[first].sentence:
            stop += 1
        sentence = tokens[first:stop]
        words = [t.word for t in sentence]
        terms = _longest_matches(words, lex.patterns, lex.max_len)
        if terms:
            events = _longest_matches(words, _TRIGGERS, _TRIGGER_MAX_LEN)
            negators = _negate_sentence(words, terms, events, window)
            for term, k in zip(terms, negators, strict=True):
                trigger = None
                if k is not None:
                    event = events[k]
                    trigger = text[sentence[event.first].start : sentence[event.stop - 1].end]
                start, end = sentence[term.first].start, sentence[term.stop - 1].end
                mentions.append(
                    Mention(
                        term.label,
                        text[start:end],
                        start,
                        end,
                        sentence[0].sentence,
                        k is not None,
                        trigger,
                    )
                )
        first = stop
    return mentions


def extract_terms(
    text: str,
    lexicon: Any = None,
    negation: bool = True,
    scope_window: int = DEFAULT_SCOPE_WINDOW,
) -> set[str]:
    """Concept ids of the findings a report mentions (Hofmanninger et al., Sec. 3).

    With ``negation=True`` explicitly negated mentions are ignored (a term counts if at least
    one of its mentions is affirmed, hedged mentions included); with ``negation=False`` every
    matched term counts (the ablation).
    """
    mentions = find_mentions(text, lexicon, scope_window)
    return {m.term for m in mentions if not (negation and m.negated)}


def _is_missing(report: Any) -> bool:
    return report is None or (isinstance(report, float) and np.isnan(report)) or report is pd.NA


def term_matrix(
    reports: Mapping[Any, str | None] | pd.Series,
    lexicon: Any = None,
    negation: bool = True,
    scope_window: int = DEFAULT_SCOPE_WINDOW,
    missing: str = "drop",
    verbose: bool = False,
) -> pd.DataFrame:
    """Cases x terms 0/1 table of the findings each report mentions (``extract_terms``).

    Columns are all concept ids of the lexicon in lexicon order (so tables of different cohorts
    align; select with ``frequent_terms``), the index the case ids (name ``case_id``). A case
    whose report is missing (``None``/NaN) is dropped with ``missing="drop"`` (the paper
    evaluates only records with a report) or kept as a row of NaN with ``missing="nan"`` (the
    table is then float). An empty string is a report that mentions nothing, not a missing one.
    """
    if missing not in ("drop", "nan"):
        raise ValueError(f"missing must be 'drop' or 'nan', got {missing!r}")
    if not isinstance(reports, Mapping | pd.Series):
        raise ValueError(f"reports must be a mapping case_id -> text, got {type(reports).__name__}")
    window = check_int("scope_window", scope_window)
    lex = load_lexicon(lexicon)
    column = {term: j for j, term in enumerate(lex.terms)}
    items = list(reports.items())
    index = pd.Index([case_id for case_id, _ in items], name="case_id")
    if index.has_duplicates:
        raise ValueError(f"reports: duplicate case ids {sorted(set(index[index.duplicated()]))}")
    values = np.zeros((len(items), len(lex.terms)), dtype=np.float64)
    present = np.ones(len(items), dtype=bool)
    for i, (case_id, report) in enumerate(tqdm(items, desc="report terms", disable=not verbose)):
        if _is_missing(report):
            present[i] = False
            continue
        if not isinstance(report, str):
            raise ValueError(f"report of case {case_id!r} must be a str or None, got {report!r}")
        found = extract_terms(report, lex, negation=negation, scope_window=window)
        values[i, [column[t] for t in found]] = 1.0
    n_missing = int((~present).sum())
    if n_missing:
        log.info("term_matrix: %d of %d cases have no report (%s)", n_missing, len(items), missing)
    if missing == "drop":
        return pd.DataFrame(
            values[present].astype(np.int64), index=index[present], columns=list(lex.terms)
        )
    values[~present] = np.nan
    return pd.DataFrame(values, index=index, columns=list(lex.terms))


def frequent_terms(matrix: pd.DataFrame, min_count: int = 50) -> pd.DataFrame:
    """The columns of ``matrix`` whose term occurs in strictly more than ``min_count`` reports
    (the paper keeps terms occurring "more than 50 times"). Rows of NaN do not count."""
    if not isinstance(matrix, pd.DataFrame):
        raise ValueError(f"matrix must be a DataFrame, got {type(matrix).__name__}")
    check_int("min_count", min_count, 0)
    counts = matrix.sum(axis=0, skipna=True)
    keep = counts.index[counts.to_numpy() > min_count]
    log.info(
        "frequent_terms: %d of %d terms occur > %d times", len(keep), matrix.shape[1], min_count
    )
    return matrix.loc[:, keep].copy()


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def extraction_scores(predicted: pd.DataFrame, truth: pd.DataFrame) -> dict[str, Any]:
    """Micro-averaged and per-term precision, recall and F1 of ``predicted`` against ``truth``.

    Both are cases x terms 0/1 tables; the scores use the columns of ``truth`` (which must all
    be in ``predicted``) and the cases in both indexes, leaving out rows with NaN in either
    (cases without a report). Returns ``{"precision", "recall", "f1", "tp", "fp", "fn",
    "n_cases", "per_term": {term: {"precision", "recall", "f1", "support", "n_predicted"}}}``;
    a ratio with a zero denominator is NaN.
    """
    for name, table in (("predicted", predicted), ("truth", truth)):
        if not isinstance(table, pd.DataFrame):
            raise ValueError(f"{name} must be a DataFrame, got {type(table).__name__}")
    absent = [c for c in truth.columns if c not in predicted.columns]
    if absent:
        raise ValueError(f"predicted lacks truth column(s) {absent}")
    cases = truth.index.intersection(predicted.index)
    pred = predicted.loc[cases, list(truth.columns)]
    true = truth.loc[cases]
    complete = ~(pred.isna().any(axis=1) | true.isna().any(axis=1))
    pred, true = pred[complete].to_numpy(np.float64), true[complete].to_numpy(np.float64)
    if pred.shape[0] == 0:
        raise ValueError("predicted and truth share no case with values")
    for name, values in (("predicted", pred), ("truth", true)):
        if not np.isin(values, (0.0, 1.0)).all():
            raise ValueError(f"{name} must hold only 0/1 values")
    tp = (pred * true).sum(axis=0)
    fp = (pred * (1 - true)).sum(axis=0)
    fn = ((1 - pred) * true).sum(axis=0)
    per_term = {}
    for j, term in enumerate(truth.columns):
        precision, recall = _ratio(tp[j], tp[j] + fp[j]), _ratio(tp[j], tp[j] + fn[j])
        per_term[term] = {
            "precision": precision,
            "recall": recall,
            "f1": _ratio(2 * tp[j], 2 * tp[j] + fp[j] + fn[j]),
            "support": int(tp[j] + fn[j]),
            "n_predicted": int(tp[j] + fp[j]),
        }
    TP, FP, FN = tp.sum(), fp.sum(), fn.sum()
    return {
        "precision": _ratio(TP, TP + FP),
        "recall": _ratio(TP, TP + FN),
        "f1": _ratio(2 * TP, 2 * TP + FP + FN),
        "tp": int(TP),
        "fp": int(FP),
        "fn": int(FN),
        "n_cases": int(pred.shape[0]),
        "per_term": per_term,
    }
