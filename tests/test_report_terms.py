"""medclust.report_terms: lexicon, normalisation, NegEx negation, term matrix and scores."""

from __future__ import annotations

from importlib.resources import files

import numpy as np
import pandas as pd
import pytest

from medclust import report_terms as rt

CANONICAL = [
    "emphysema",
    "nodule",
    "pleural_effusion",
    "consolidation",
    "fibrosis",
    "ground_glass",
    "cardiomegaly",
    "atelectasis",
    "lymphadenopathy",
    "hiatal_hernia",
    "atherosclerosis",
]

NEGATION_CASES = [
    # pre-negation, conjunction inside the window, sentence boundary
    ("No pleural effusion.", set()),
    ("No pleural effusion or pneumothorax.", set()),
    ("No pleural effusion. Small nodule in the right upper lobe.", {"nodule"}),
    ("No pleural\neffusion.", set()),  # a hard line wrap is not a sentence end
    ("Lungs: no nodules\nHeart: cardiomegaly", {"cardiomegaly"}),  # new line, capital: new one
    # termination terms
    ("No effusion but a small nodule.", {"nodule"}),
    ("No consolidation, however a small ground-glass opacity.", {"ground_glass"}),
    ("No pneumothorax; subsegmental atelectasis.", {"atelectasis"}),
    ("No pneumothorax, there is a small hiatus hernia.", {"hiatal_hernia"}),
    ("No evidence of effusion and the heart is enlarged.", {"cardiomegaly"}),
    # post-negation
    ("Pneumothorax is absent.", set()),
    ("A pneumothorax was ruled out.", set()),
    ("The previously described nodule is not seen.", set()),
    ("Pneumothorax isn't seen.", set()),  # contraction -> "is not seen"
    ("The right pleural effusion has resolved.", set()),
    ("Lymphadenopathy is unlikely.", set()),
    ("Pleural effusion: none.\nNodule: 5 mm in the RUL.", {"nodule"}),
    # pseudo-negations negate nothing (and end a scope)
    ("No change in the nodule.", {"nodule"}),
    ("No interval change of the small pleural effusions.", {"pleural_effusion"}),
    ("No increase in size of the right lower lobe mass.", {"mass"}),
    ("Not only emphysema but also bronchiectasis.", {"emphysema", "bronchiectasis"}),
    ("Early pneumonia cannot be ruled out.", {"pneumonia"}),
    ("Pneumonia not excluded.", {"pneumonia"}),
    # hedged mentions count as mentioned (documented choice)
    ("Possible nodule in the left lower lobe.", {"nodule"}),
    ("Findings suspicious for pneumonia.", {"pneumonia"}),
    # more pre-negation triggers
    (
        "Without evidence of emphysema. Free of consolidation. Negative for pneumothorax. "
        "Absence of bronchiectasis. CT rules out pulmonary embolism.",
        set(),
    ),
    # a list carries the negation past the 5-word window (conjunction rule) ...
    (
        "No pleural effusion, pneumothorax, consolidation, focal airspace disease or suspicious "
        "pulmonary nodule.",
        set(),
    ),
    # ... but an unrelated term 7 words after the trigger is outside the window
    ("No fever reported by the patient today, nodule in the right lower lobe.", {"nodule"}),
    # negated and affirmed mentions of one term: affirmed wins
    ("No new nodule. The known nodule is stable.", {"nodule"}),
    # synonyms, plurals and hyphen/space variants
    (
        "Ground-glass opacities, GGOs, honeycombing and reticular opacities; bullae and "
        "paraseptal emphysema.",
        {"ground_glass", "fibrosis", "emphysema"},
    ),
    ("Enlarged heart, i.e. cardiac enlargement.", {"cardiomegaly"}),
    (
        "Mediastinal adenopathy and enlarged lymph nodes; hiatus hernia; calcified "
        "atherosclerotic plaque and vascular calcifications.",
        {"lymphadenopathy", "hiatal_hernia", "atherosclerosis"},
    ),
    (
        "Dependent atelectasis. Infiltrate in the left lower lobe. Airspace disease.",
        {"atelectasis", "consolidation"},
    ),
    # word boundaries and longest match
    ("Massive pleural effusion.", {"pleural_effusion"}),  # "massive" is not "mass"
    ("Spiculated masses in the right upper lobe.", {"mass"}),
    ("Large pericardial effusion.", {"pericardial_effusion"}),  # not a pleural effusion
    ("Ground-glass nodule.", {"nodule"}),  # not ground_glass
]


@pytest.mark.parametrize(("text", "expected"), NEGATION_CASES)
def test_negation_rules(text, expected):
    assert rt.extract_terms(text) == expected


def test_without_negation_every_match_counts():
    text = "No pleural effusion or pneumothorax. Possible nodule."
    assert rt.extract_terms(text, negation=False) == {"pleural_effusion", "pneumothorax", "nodule"}
    assert rt.extract_terms(text) == {"nodule"}


def test_scope_window_parameter():
    text = "No fever reported by the patient today, nodule in the right lower lobe."
    # "nodule" is the 7th word after "No": outside a 5- or 6-word window, inside a 7-word one
    assert rt.extract_terms(text, scope_window=6) == {"nodule"}
    assert rt.extract_terms(text, scope_window=7) == set()
    with pytest.raises(ValueError, match="scope_window"):
        rt.extract_terms(text, scope_window=0)


def test_mentions_have_spans_and_triggers():
    text = "Small effusion. No pneumothorax or Ground-Glass opacity; nodule was ruled out."
    mentions = rt.find_mentions(text)
    assert [(m.term, m.negated, m.trigger) for m in mentions] == [
        ("pleural_effusion", False, None),
        ("pneumothorax", True, "No"),
        ("ground_glass", True, "No"),
        ("nodule", True, "was ruled out"),
    ]
    assert [text[m.start : m.end] for m in mentions] == [m.text for m in mentions]
    assert mentions[2].text == "Ground-Glass opacity"
    assert mentions[0].sentence != mentions[1].sentence
    assert mentions[1].sentence == mentions[3].sentence  # ";" ends a scope, not a sentence


def test_sentence_splitting_keeps_decimals_and_abbreviations():
    tokens = rt.tokenize("Nodule 3.5 mm, e.g. in the RUL, approx. stable. No effusion.")
    sentences = sorted({t.sentence for t in tokens})
    assert len(sentences) == 2
    assert [t.word for t in tokens if t.sentence == sentences[1]] == ["no", "effusion"]
    with pytest.raises(ValueError, match="text must be a str"):
        rt.tokenize(None)


@pytest.mark.parametrize(
    ("word", "normal"),
    [
        ("Opacities", "opacity"),
        ("effusions", "effusion"),
        ("bullae", "bulla"),
        ("masses", "mass"),
        ("metastases", "metastasis"),
        ("pneumothoraces", "pneumothorax"),
        ("GGOs", "ggo"),
        ("hernias", "hernia"),
        ("fibrosis", "fibrosis"),
        ("emphysematous", "emphysematous"),
        ("pancreas", "pancreas"),
    ],
)
def test_normalize_word(word, normal):
    assert rt.normalize_word(word) == normal


def test_packaged_lexicon_covers_the_shared_vocabulary():
    lex = rt.default_lexicon()
    assert set(CANONICAL) <= set(lex.terms)
    assert {"pneumothorax", "bronchiectasis", "mass"} <= set(lex.terms)
    assert len(lex.terms) >= len(CANONICAL) + 5
    frame = pd.read_csv(files("medclust") / "data" / rt.LEXICON_RESOURCE, comment="#")
    assert list(frame.columns[:2]) == ["term", "synonym"]
    assert (frame["synonym"] == frame["synonym"].str.lower()).all()
    assert frame["term"].str.fullmatch(r"[a-z][a-z0-9_]*").all()
    assert not frame.duplicated(["term", "synonym"]).any()


def test_every_synonym_extracts_its_own_concept():
    # invariant: longest match never lets a shorter synonym of another concept win
    frame = pd.read_csv(files("medclust") / "data" / rt.LEXICON_RESOURCE, comment="#")
    for term, synonym in zip(frame["term"], frame["synonym"], strict=True):
        assert rt.extract_terms(synonym) == {term}, synonym


@pytest.mark.parametrize(
    ("surface", "term"),
    [
        ("pleural fluid", "pleural_effusion"),
        ("effusions", "pleural_effusion"),
        ("ground-glass opacity", "ground_glass"),
        ("GGO", "ground_glass"),
        ("honeycombing", "fibrosis"),
        ("reticular opacities", "fibrosis"),
        ("interstitial fibrosis", "fibrosis"),
        ("cardiac enlargement", "cardiomegaly"),
        ("enlarged heart", "cardiomegaly"),
        ("emphysematous changes", "emphysema"),
        ("bullae", "emphysema"),
        ("paraseptal emphysema", "emphysema"),
        ("airspace disease", "consolidation"),
        ("air-space disease", "consolidation"),
        ("infiltrate", "consolidation"),
        ("mediastinal adenopathy", "lymphadenopathy"),
        ("enlarged lymph nodes", "lymphadenopathy"),
        ("vascular calcifications", "atherosclerosis"),
        ("calcified atherosclerotic plaque", "atherosclerosis"),
        ("hiatus hernia", "hiatal_hernia"),
        ("subsegmental atelectasis", "atelectasis"),
        ("dependent atelectasis", "atelectasis"),
        ("pulmonary nodules", "nodule"),
        ("mass", "mass"),
        ("pneumothorax", "pneumothorax"),
        ("bronchiectasis", "bronchiectasis"),
    ],
)
def test_radiologist_synonyms(surface, term):
    assert rt.extract_terms(f"There is {surface}.") == {term}


def test_custom_lexicon_and_its_errors():
    lex = {"nodule": ["nodule", "lesion"], "cyst": ["cyst"]}
    assert rt.extract_terms("Two lesions, no cysts.", lexicon=lex) == {"nodule"}
    assert rt.load_lexicon(lex).terms == ("nodule", "cyst")
    with pytest.raises(ValueError, match="maps to both"):
        rt.load_lexicon({"a": ["nodules"], "b": ["nodule"]})  # same after normalisation
    with pytest.raises(ValueError, match="missing column"):
        rt.load_lexicon(pd.DataFrame({"term": ["a"], "surface": ["b"]}))
    with pytest.raises(ValueError, match="snake_case"):
        rt.load_lexicon({"Pleural Effusion": ["effusion"]})
    with pytest.raises(ValueError, match="does not exist"):
        rt.load_lexicon("/nonexistent/lexicon.csv")


def test_term_matrix_with_missing_report():
    reports = {
        "a": "No pleural effusion. Nodule in the RUL.",
        "b": None,
        "c": "Bilateral pleural effusions.",
        "d": "",
        "e": float("nan"),
    }
    matrix = rt.term_matrix(reports)
    assert list(matrix.index) == ["a", "c", "d"]  # cases without a report are dropped
    assert matrix.index.name == "case_id"
    assert list(matrix.columns) == list(rt.default_lexicon().terms)
    assert all(np.issubdtype(t, np.integer) for t in matrix.dtypes)
    assert matrix.loc["a", "nodule"] == 1 and matrix.loc["a", "pleural_effusion"] == 0
    assert matrix.loc["c", "pleural_effusion"] == 1
    assert matrix.loc["d"].sum() == 0  # an empty report mentions nothing
    assert matrix.to_numpy().sum() == 2

    kept = rt.term_matrix(reports, missing="nan")
    assert list(kept.index) == list(reports)
    assert kept.loc[["b", "e"]].isna().all().all()
    assert kept.loc[["a", "c", "d"]].equals(matrix.astype(float))

    ablation = rt.term_matrix(reports, negation=False)
    assert ablation.loc["a", "pleural_effusion"] == 1

    with pytest.raises(ValueError, match="missing must be"):
        rt.term_matrix(reports, missing="zero")
    with pytest.raises(ValueError, match="case 'x'"):
        rt.term_matrix({"x": 3})


def test_frequent_terms_is_strictly_greater_than():
    matrix = pd.DataFrame(
        {"two": [1, 1, 0, 0, 0], "three": [1, 1, 1, 0, 0], "four": [1, 1, 1, 1, 0]},
        index=list("abcde"),
    )
    assert list(rt.frequent_terms(matrix, min_count=3).columns) == ["four"]
    assert list(rt.frequent_terms(matrix, min_count=2).columns) == ["three", "four"]
    with_nan = matrix.astype(float)
    with_nan.loc["e"] = np.nan  # a missing report counts for nothing
    assert list(rt.frequent_terms(with_nan, min_count=3).columns) == ["four"]
    with pytest.raises(ValueError, match="min_count"):
        rt.frequent_terms(matrix, min_count=-1)


def test_extraction_scores_hand_computed():
    truth = pd.DataFrame(
        {"nodule": [1, 1, 0, 0, 1], "pleural_effusion": [0, 1, 1, 0, 0]}, index=list("abcde")
    )
    predicted = pd.DataFrame(
        {
            "nodule": [1, 0, 1, 0, np.nan],  # case e has no report: left out
            "pleural_effusion": [0, 1, 1, 1, np.nan],
            "emphysema": [1, 0, 0, 0, np.nan],  # not in truth: ignored
        },
        index=list("abcde"),
    )
    scores = rt.extraction_scores(predicted, truth)
    # nodule: tp 1 (a), fp 1 (c), fn 1 (b); effusion: tp 2 (b, c), fp 1 (d), fn 0
    assert (scores["tp"], scores["fp"], scores["fn"], scores["n_cases"]) == (3, 2, 1, 4)
    assert scores["precision"] == pytest.approx(3 / 5)
    assert scores["recall"] == pytest.approx(3 / 4)
    assert scores["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert scores["per_term"]["nodule"]["precision"] == pytest.approx(1 / 2)
    assert scores["per_term"]["pleural_effusion"]["recall"] == pytest.approx(1.0)
    assert scores["per_term"]["pleural_effusion"]["support"] == 2
    with pytest.raises(ValueError, match="lacks truth column"):
        rt.extraction_scores(predicted[["nodule"]], truth)


def test_extraction_scores_on_generated_reports():
    # reports written from known findings (some negated) are scored perfectly
    rng = np.random.default_rng(0)
    names = {"nodule": "pulmonary nodules", "pleural_effusion": "pleural effusion"}
    truth = pd.DataFrame(rng.integers(0, 2, size=(12, 2)), columns=list(names))
    reports = {}
    for i, row in truth.iterrows():
        present = [names[t] for t in names if row[t]]
        absent = [names[t] for t in names if not row[t]]
        text = (" and ".join(present).capitalize() + ". ") if present else ""
        text += ("No " + " or ".join(absent) + ".") if absent else ""
        reports[i] = text
    scores = rt.extraction_scores(rt.term_matrix(reports), truth)
    assert scores["fp"] == 0 and scores["fn"] == 0 and scores["recall"] == 1.0
