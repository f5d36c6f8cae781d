"""Study 05, population clustering of routine lung CT linked to radiology report terms
(``notebooks/05_population_clustering.ipynb``; /work/shared/papers/004_8f822e2a6a11f707.txt).

The steps of the paper's Sec. 2 after the spatial normalisation and the local features (the
``population_features`` stage, :mod:`medclust.population`):

* "Bag of Words": :func:`bags_of_words` quantises the position-augmented local features with
  three vocabularies (Haralick, microSIFT, macroSIFT);
* volume descriptors: :func:`volume_descriptors` gives f^H, f^S, [f^H f^S] and the LDA topic
  mixture f^L;
* report terms: :func:`report_terms` (RadLex-style lexicon, NegEx negation, terms in more than
  ``min_term_count`` reports) and, on the phantom, :func:`term_extraction` against the truth;
* "Identification of clusters": :func:`q_k_curves` runs k-means for every descriptor, seed and
  K and scores each clustering by Q_K (Eq. 2); K and the seed are chosen as in Fig. 3;
* the figures, analogs of Fig. 3-6 (:mod:`medclust.studies.population_plots`, here as
  ``plot_*``), the paper's numbers beside this run's (:func:`paper_comparison`) and
  ``metrics.json`` (:func:`study_metrics`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import LatentDirichletAllocation

from medclust import metrics as cm
from medclust.association import q_k
from medclust.cohort import Cohort
from medclust.features.bovw import FEATURE_KINDS, Vocabulary, local_features
from medclust.population import load_features
from medclust.report_terms import extraction_scores, frequent_terms, term_matrix
from medclust.studies import common
from medclust.studies.population_plots import (
    plot_associations,
    plot_q_k,
    plot_three_clusters,
    plot_tsne,
)
from medclust.validation import check_int, check_number

__all__ = [
    "DESCRIPTORS",
    "HEADLINE",
    "POSITIVE_INTS",
    "QualityCurves",
    "bags_of_words",
    "frequencies",
    "normalization_per_volume",
    "normalization_summary",
    "normalized_features",
    "null_check_table",
    "paper_comparison",
    "plot_associations",
    "plot_q_k",
    "plot_three_clusters",
    "plot_tsne",
    "q_k_curves",
    "report_terms",
    "start",
    "study_metrics",
    "term_extraction",
    "term_frequencies",
    "topic_table",
    "vocabulary_table",
    "volume_descriptors",
]

#: Integer params of the notebook that must be >= 1.
POSITIVE_INTS = (
    "n_words_haralick",
    "n_words_micro_sift",
    "n_words_macro_sift",
    "max_per_volume",
    "n_topics",
    "k_min",
    "k_max",
    "k_step",
    "n_seeds",
    "n_permutations",
)
#: The volume descriptors compared (Fig. 4), in the order of the tables and figures.
DESCRIPTORS = ("f_H", "f_S", "f_HS", "f_L")
#: ``metrics.json``: short name -> dotted path into the metrics.
HEADLINE = {
    "k": "chosen_k",
    "q_k": "q_k_chosen",
    "q_null": "q_k_null_max",
    "nmi_L": "phenotype_nmi.f_L",
    "term_p": "term_extraction.precision",
    "term_r": "term_extraction.recall",
}


def start(report_dir: str, params: Mapping[str, Any]) -> common.StudyRun:
    """Check the notebook's params (``params``: its namespace, e.g. ``globals()``) before any
    work and open the report folder: the :data:`POSITIVE_INTS` are integers >= 1,
    ``2 <= k_min <= k_max`` and ``0 < alpha < 1``; errors name the param."""
    for name in POSITIVE_INTS:
        check_int(f"param {name}", params[name])
    k_min, k_max = params["k_min"], params["k_max"]
    if not 2 <= k_min <= k_max:
        raise ValueError(f"params must satisfy 2 <= k_min <= k_max, got {k_min}, {k_max}")
    check_number("param alpha", params["alpha"], 0.0, 1.0, low_open=True, high_open=True)
    return common.start(report_dir)


# --------------------------------------------------------------------------- data


def normalized_features(data: Cohort, features_dir: str) -> list[dict[str, Any]]:
    """The records of the ``population_features`` stage (:func:`medclust.population.load_features`)
    in the cohort's case order; an error names the cases without features."""
    records = {r["case_id"]: r for r in load_features(features_dir)}
    missing = sorted(set(data.case_ids) - set(records))
    if missing:
        raise ValueError(
            f"{features_dir}: no features for {len(missing)} case(s) of {data.root}, e.g. "
            f"{missing[:5]}; rerun the population_features stage"
        )
    return [records[c] for c in data.case_ids]


def normalization_per_volume(records: Sequence[Mapping], clinical: pd.DataFrame) -> pd.DataFrame:
    """One row per volume: the chosen template (Eq. 1), its NCC, the lung Dice of the warped
    atlas labels, the numbers of local features and, where the cohort has it, the field of view."""
    table = pd.DataFrame(
        {
            "case_id": [r["case_id"] for r in records],
            "template": [r["template_index"] for r in records],
            "ncc": [r["ncc"] for r in records],
            "lung_dice": [r["lung_dice"] for r in records],
            "n_haralick": [len(r["haralick"]) for r in records],
            "n_sift": [len(r["sift"]) for r in records],
        }
    )
    if "fov" in clinical.columns:
        table["fov"] = clinical["fov"].to_numpy()
    return table


def normalization_summary(registration: pd.DataFrame) -> pd.DataFrame:
    """Means of :func:`normalization_per_volume` per field of view (one row ``all`` without)."""
    by = registration.get("fov", pd.Series("all", index=registration.index))
    return registration.groupby(by).agg(
        volumes=("case_id", "size"),
        lung_dice=("lung_dice", "mean"),
        ncc=("ncc", "mean"),
        haralick_per_volume=("n_haralick", "mean"),
        sift_per_volume=("n_sift", "mean"),
    )


# --------------------------------------------------------------------------- descriptors


def bags_of_words(
    records: Sequence[Mapping],
    n_words: Sequence[int],
    position_weight: float,
    max_per_volume: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Word counts per volume for each vocabulary of :data:`FEATURE_KINDS` (``n_words`` in
    that order: Haralick, microSIFT, macroSIFT), learned by mini-batch k-means on the local
    features augmented with their atlas position (Sec. 2, "Bag of Words"). A kind without
    any local feature (e.g. no keypoint of <= 2 cm on coarse voxels) is left out: 0 columns."""
    counts = {}
    for kind, n in zip(FEATURE_KINDS, n_words, strict=True):
        local = local_features(records, kind, position_weight=position_weight)
        n_local = sum(len(f) for f in local)
        if n_local == 0:
            logging.warning("no %s features in any volume: vocabulary left out", kind)
            counts[kind] = np.zeros((len(records), 0))
            continue
        vocab = Vocabulary(
            n_words=min(n, n_local), seed=seed, max_per_volume=max_per_volume, position_columns=3
        )
        counts[kind] = vocab.fit(local).transform(local)
    return counts


def frequencies(counts: np.ndarray) -> np.ndarray:
    """Word counts as relative frequencies per volume (rows of zeros stay zero)."""
    total = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts, dtype=float), where=total > 0)


def volume_descriptors(
    counts: Mapping[str, np.ndarray], n_topics: int, seed: int
) -> dict[str, np.ndarray]:
    """The descriptors of :data:`DESCRIPTORS`: f^H and f^S as relative word frequencies per
    vocabulary, [f^H f^S], and f^L, the ``n_topics``-topic LDA mixture of all word counts."""
    all_counts = np.hstack([counts[k] for k in FEATURE_KINDS])
    lda = LatentDirichletAllocation(
        n_components=n_topics, learning_method="batch", max_iter=50, random_state=seed
    )
    descriptors = {
        "f_H": frequencies(counts["haralick"]),
        "f_S": np.hstack([frequencies(counts["micro_sift"]), frequencies(counts["macro_sift"])]),
        "f_L": lda.fit_transform(all_counts),
    }
    descriptors["f_HS"] = np.hstack([descriptors["f_H"], descriptors["f_S"]])
    return {k: descriptors[k] for k in DESCRIPTORS}


def topic_table(f_L: np.ndarray, case_ids: Sequence[str]) -> pd.DataFrame:
    """f^L: one distribution over topics per volume (``tables/topic_mixtures``)."""
    topics = pd.DataFrame(
        f_L,
        index=pd.Index(case_ids, name="case_id"),
        columns=[f"topic_{t}" for t in range(f_L.shape[1])],
    )
    return topics.reset_index()


def vocabulary_table(counts: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Local features quantised per vocabulary, and the volumes without any."""
    return pd.DataFrame(
        {kind: [int(c.sum()), int((c.sum(axis=1) == 0).sum())] for kind, c in counts.items()},
        index=["local features", "volumes without any"],
    )


# --------------------------------------------------------------------------- report terms


def report_terms(
    reports: Mapping[str, str | None], min_term_count: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(terms_all, terms)``: every lexicon term found with negation handling in the reports
    (cases without a report dropped), and the terms occurring in more than ``min_term_count``
    reports, by decreasing frequency (the paper: > 50 of 5,886 reports)."""
    terms_all = term_matrix(dict(reports), negation=True)
    terms = frequent_terms(terms_all, min_count=min_term_count)
    if terms.shape[1] == 0:
        raise ValueError(
            f"no term occurs in more than {min_term_count} reports (param min_term_count)"
        )
    return terms_all, terms[terms.sum().sort_values(ascending=False).index]


def term_frequencies(terms: pd.DataFrame) -> pd.DataFrame:
    """Reports per kept term (``tables/term_frequencies``)."""
    return terms.sum().rename("reports").rename_axis("term").reset_index()


def term_extraction(
    reports: Mapping[str, str | None], clinical: pd.DataFrame, terms_all: pd.DataFrame
) -> pd.DataFrame:
    """Precision / recall / F1 of the term extraction, with and without negation handling,
    against what each report truly mentions (``mentioned_<finding>``) and against the true
    findings (``finding_<finding>``); empty when the cohort has no such columns."""
    findings = [
        c.removeprefix("mentioned_") for c in clinical.columns if c.startswith("mentioned_")
    ]
    if not findings:
        return pd.DataFrame()
    no_negation = term_matrix(dict(reports), negation=False)
    with_report = [c for c, text in reports.items() if text is not None]
    rows = []
    for prefix in ("mentioned_", "finding_"):
        truth = clinical.loc[with_report, [prefix + f for f in findings]].set_axis(findings, axis=1)
        for label, predicted in (("with negation", terms_all), ("without negation", no_negation)):
            scores = extraction_scores(predicted, truth)
            rows.append(
                {
                    "truth": prefix.rstrip("_"),
                    "extraction": label,
                    "precision": scores["precision"],
                    "recall": scores["recall"],
                    "f1": scores["f1"],
                }
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- clustering


@dataclass
class QualityCurves:
    """Q_K of every descriptor, seed and K (Fig. 3 and 4) and the chosen clustering."""

    quality: pd.DataFrame  # one row per (descriptor, seed, K): q_k[, phenotype_nmi]
    labels: dict[tuple[str, int, int], np.ndarray]  # (descriptor, seed, K) -> cluster labels
    mean_q: pd.DataFrame  # descriptor x K: Q_K averaged over the seeds
    ks: range
    chosen_k: int  # K of the largest mean Q_K of f^L
    chosen_seed: int  # the seed of the largest Q_K of f^L at chosen_k (lowest on ties)

    @property
    def chosen(self) -> np.ndarray:
        """Cluster labels of f^L at the chosen K and seed."""
        return self.labels["f_L", self.chosen_seed, self.chosen_k]


def q_k_curves(
    descriptors: Mapping[str, np.ndarray],
    ks: range,
    seeds: Sequence[int],
    terms: pd.DataFrame,
    alpha: float,
    phenotypes: pd.Series | None = None,
) -> QualityCurves:
    """k-means (10 initialisations) of every descriptor for every K in ``ks`` and seed, scored
    by Q_K (Eq. 2) against ``terms`` (cases x terms in case order, NaN rows for volumes without a
    report: clustered, not tested) and, given ``phenotypes``, by the NMI to them. K maximises
    the mean Q_K of f^L over the seeds (Fig. 3), and the seed the Q_K of f^L at that K."""
    labels, rows = {}, []
    for name, D in descriptors.items():
        for s in seeds:
            for k in ks:
                labels[name, s, k] = lab = KMeans(k, n_init=10, random_state=s).fit_predict(D)
                row = {"descriptor": name, "seed": s, "K": k, "q_k": q_k(lab, terms, alpha)}
                if phenotypes is not None:
                    row["phenotype_nmi"] = cm.nmi(phenotypes.astype(str), lab)
                rows.append(row)
    quality = pd.DataFrame(rows)
    mean_q = quality.groupby(["descriptor", "K"]).q_k.mean().unstack("K")
    chosen_k = int(mean_q.loc["f_L"].idxmax())
    at_k = quality[(quality.descriptor == "f_L") & (quality.K == chosen_k)]
    chosen_seed = int(at_k.sort_values(["q_k", "seed"], ascending=[False, True]).seed.iloc[0])
    return QualityCurves(quality, labels, mean_q, ks, chosen_k, chosen_seed)


def null_check_table(observed: int, permuted: np.ndarray) -> pd.DataFrame:
    """Q_K at the chosen clustering beside Q_K with the reports permuted across patients."""
    return pd.DataFrame(
        {
            "q_k_observed": [observed],
            "q_k_null_mean": [permuted.mean()],
            "q_k_null_max": [permuted.max()],
            "n_permutations": [len(permuted)],
        }
    )


# --------------------------------------------------------------------------- results


def paper_comparison(
    reports: Mapping[str, str | None],
    terms: pd.DataFrame,
    min_term_count: int,
    registration: pd.DataFrame,
    curves: QualityCurves,
    q_chosen: int,
    q_null: np.ndarray,
) -> list[dict[str, Any]]:
    """What the paper's text states beside this run (its figures are missing from the text)."""
    ks, k = curves.ks, curves.chosen_k
    order = curves.mean_q.loc[:, k].sort_values(ascending=False)
    n_seeds = curves.quality.seed.nunique()
    n_reports = sum(text is not None for text in reports.values())
    return [
        {
            "quantity": "volumes / with report",
            "paper": "7,812 / 5,886",
            "this_run": f"{len(reports)} / {n_reports}",
            "note": "phantom population",
        },
        {
            "quantity": "terms kept",
            "paper": "69 (> 50 reports)",
            "this_run": f"{terms.shape[1]} (> {min_term_count} reports)",
            "note": "threshold scaled to the cohort",
        },
        {
            "quantity": "templates chosen (Eq. 1) at least once",
            "paper": "17 in the set",
            "this_run": int(registration.template.nunique()),
            "note": "see the population_features params for the set size",
        },
        {
            "quantity": "chosen K (max of mean Q_K, f^L)",
            "paper": 20,
            "this_run": k,
            "note": f"K in {ks.start}..{ks.stop - 1} step {ks.step}",
        },
        {
            "quantity": "descriptor ranking by Q_K (Fig. 4)",
            "paper": "f^L > [f^H f^S] > f^H, f^S",
            "this_run": " > ".join(order.index),
            "note": f"mean over {n_seeds} seeds at K = {k}",
        },
        {
            "quantity": "Q_K at chosen K: observed / permuted reports",
            "paper": "not given",
            "this_run": f"{q_chosen} / {q_null.mean():.2f}",
            "note": f"{len(q_null)} permutations",
        },
    ]


def study_metrics(
    reports: Mapping[str, str | None],
    terms: pd.DataFrame,
    registration: pd.DataFrame,
    curves: QualityCurves,
    q_chosen: int,
    q_null: np.ndarray,
    extraction: pd.DataFrame,
    runtime_s: float,
) -> dict[str, Any]:
    """Every metric of the run (``tables/metrics_all.json``; :data:`HEADLINE` picks those of
    ``metrics.json``): mean Q_K per descriptor and K, the choice, the null check, the cohort's
    sizes, the lung Dice (per field of view), the phenotype NMI and the term extraction scores
    where the cohort has the truth."""
    ks, mean_q, k = list(curves.ks), curves.mean_q, curves.chosen_k
    lung_dice = {"mean": float(registration.lung_dice.mean())}
    if "fov" in registration:
        lung_dice.update(
            {f: float(v) for f, v in registration.groupby("fov").lung_dice.mean().items()}
        )
    metrics = {
        "q_k": {name: {str(K): float(mean_q.loc[name, K]) for K in ks} for name in DESCRIPTORS},
        "chosen_k": k,
        "chosen_seed": curves.chosen_seed,
        "q_k_chosen": q_chosen,
        "q_k_null": float(q_null.mean()),
        "q_k_null_max": int(q_null.max()),
        "n_volumes": len(reports),
        "n_reports": sum(text is not None for text in reports.values()),
        "n_terms": int(terms.shape[1]),
        "lung_dice": lung_dice,
    }
    quality = curves.quality
    if "phenotype_nmi" in quality.columns:
        at_k = quality[quality.K == k]
        metrics["phenotype_nmi"] = {
            name: float(at_k[at_k.descriptor == name].phenotype_nmi.mean())
            for name in ("f_L", "f_HS", "f_H", "f_S")
        }
    if len(extraction):
        score = extraction.set_index(["truth", "extraction"])
        metrics["term_extraction"] = {
            "precision": score.loc[("mentioned", "with negation"), "precision"],
            "recall": score.loc[("mentioned", "with negation"), "recall"],
            "precision_no_negation": score.loc[("mentioned", "without negation"), "precision"],
            "recall_no_negation": score.loc[("mentioned", "without negation"), "recall"],
            "recall_vs_true_findings": score.loc[("finding", "with negation"), "recall"],
        }
    metrics["runtime_s"] = runtime_s
    return metrics
