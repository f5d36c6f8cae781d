"""The method x cohort matrix (``notebooks/06_method_matrix.ipynb``): the clustering heads of
the five studies on real images and on a phantom, every cell scored the same way.

The studies each run on their own phantom; this notebook asks how their methods fare on real
scans. Each cohort of the ``cohorts`` listing (:mod:`medclust.datasets.listing`: a MedMNIST
npz converted by the ``real_cohorts`` stage, or a cohort folder) is read as one image per case
with its class (:func:`load_images`), and every method is fitted on the training split and
scored on the test split, per seed (:func:`run_cohort`):

* the one-cluster row (the majority class), k-means on the pixels and on their first
  ``embedding_dim`` principal components (study 04's baselines);
* an autoencoder pretrained once per seed -- the thesis' CAE (Table 3.2) for 2D images, DEC's
  fully connected ``d-500-500-2000-e`` for volumes (Xie et al. 2016; a 3D CAE trained at
  0.9 s per step of 64 volumes of 32^3 here, 15 minutes a seed) -- then k-means on its
  embedding and the heads DEC, IDEC (DCEC with gamma 0.1) and DCEC (study 04) and DCN (study
  01's objective), every head on the same autoencoder (``pretrained=``);
* on 3D cohorts JULE (study 02's 3D CNN, trained on the whole volumes, as JULE clusters whole
  images) and DeepCluster (study 03's 3D U-Net, dense features pooled over the volume), each
  followed by k-means on its features;
* a supervised ceiling: logistic regression on the same pixels (plain accuracy).

:func:`score_cohort` scores every method on the same bootstrap draws of the test images and
seeds (:mod:`medclust.comparison`), with each clustering's permutation chance level and the
paired difference of every method from k-means on PCA-d pixels (:data:`BASELINE`), the verdict
of a cell. :func:`matrix_table` and :func:`plot_matrix` assemble the cohorts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import pairwise_distances_argmin
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from medclust import comparison as cmp
from medclust.cohort import load_cohort
from medclust.datasets.listing import Entry, entries, read_sources
from medclust.intensity import rescale_percentiles
from medclust.models import DCEC, DCN, DEC, JULE, CAEEmbedding, DeepCluster
from medclust.models.autoencoders import MLPAutoencoder, encode, network_input, pretrain
from medclust.runtime import seed_everything, sub_seed, timed
from medclust.studies.cae_dec import case_splits
from medclust.studies.cohorts import clinical_label
from medclust.studies.common import SplitMasks

log = logging.getLogger(__name__)

#: The rows of the matrix, in order, and their labels.
METHODS = {
    "one_cluster": "one cluster (majority class)",
    "raw_kmeans": "k-means on pixels",
    "pca_kmeans": "k-means on PCA-d pixels",
    "kmeans_cae": "k-means + CAE (MLP AE in 3D)",
    "dec": "DEC",
    "idec": "IDEC",
    "dcec": "DCEC",
    "dcn": "DCN",
    "jule": "JULE (3D)",
    "deepcluster": "DeepCluster (3D, pooled)",
    "logistic": "logistic regression on pixels (supervised ceiling)",
}
#: The methods of 3D cohorts only.
VOLUME_METHODS = ("jule", "deepcluster")
#: Scored by plain accuracy: a classifier of the classes themselves.
SUPERVISED = ("logistic",)
#: Every cell's verdict: the method minus k-means on PCA-d pixels, paired.
BASELINE = "pca_kmeans"
#: Bootstrap draws (test images and seeds) and permutations of the chance levels.
N_BOOT, N_PERM = 1000, 1000
#: The papers' comparisons that the matrix repeats on every cohort: (method, rival, claim).
PAPER_CLAIMS = (
    ("dec", "kmeans_cae", "Quarenghi, Table 3.5: DEC 0.805 vs k-means + CAE 0.622 (+0.183)"),
    ("dcec", "kmeans_cae", "Quarenghi, Table 3.5: DCEC 0.638 vs k-means + CAE 0.622 (+0.016)"),
    ("jule", "raw_kmeans", "Moriya et al., Fig. 4: JULE above k-means at every K"),
)


@dataclass(frozen=True)
class Settings:
    """The params of the methods (the notebook's parameters cell; see ``params.yaml``)."""

    image_px: int
    embedding_dim: int
    pretrain_steps: int
    batch_size: int
    learning_rate: float
    update_epochs: float
    tol: float
    max_epochs: float
    dcec_gamma: float
    idec_gamma: float
    dcn_lambda: float
    dcn_epochs: int
    volume_px: int
    jule_clusters: int
    jule_epochs_per_period: int
    jule_samples: int
    deepcluster_epochs: int
    deepcluster_filters: int
    device: str = "cpu"


# --------------------------------------------------------------------------- cohorts


@dataclass
class Images(SplitMasks):
    """One cohort as images: ``X`` ``(n, px, px)`` (``image_px``) or ``(n, px, px, px)``
    (``volume_px``) float32 in [0, 1], the class ``y`` and the ``split`` of every case, and
    what the cohort is."""

    name: str
    X: np.ndarray
    y: np.ndarray
    split: np.ndarray
    modality: str
    source: str
    licence: str = ""
    n_classes: int = field(init=False)

    def __post_init__(self) -> None:
        self.n_classes = len(np.unique(self.y))

    @property
    def ndim(self) -> int:
        return self.X.ndim - 1

    @property
    def y_test(self) -> np.ndarray:
        return self.y[self.test]


def resize(image: np.ndarray, px: int) -> np.ndarray:
    """``image`` (2D or 3D, float) resampled to ``px`` per side (bilinear / trilinear)."""
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    if t.shape[2:] != (px,) * image.ndim:
        mode = "bilinear" if image.ndim == 2 else "trilinear"
        t = torch.nn.functional.interpolate(
            t, size=(px,) * image.ndim, mode=mode, align_corners=False
        )
    return t[0, 0].numpy()


def load_images(entry: Entry, image_px: int, volume_px: int, seed: int) -> Images:
    """The cohort of ``entry``: every case's image (colour averaged to grey) rescaled to
    [0, 1] between its 0.5th and 99.5th percentiles (as study 04's thesis normalises every
    image) and resampled to ``image_px`` per side (a volume to ``volume_px``); its class from
    the cohort's declared label column (``clinical_label`` in ``dataset.json``); its split from
    a ``split`` column, else a seeded 70:10:20 split by class
    (:func:`medclust.studies.cae_dec.case_splits`)."""
    data = load_cohort(entry.folder)
    label = clinical_label(data)
    y = data.label_values(label).astype(str).to_numpy()
    split = case_splits(data, "split", label, seed)
    images = []
    for volume in tqdm(data.volumes(), total=len(data), desc=f"{entry.name}: images"):
        image = volume.image.astype(np.float32)
        if data.extra.get("channels", 1) > 1:
            image = image.mean(axis=-1)
        px = image_px if image.ndim == 2 else volume_px
        images.append(resize(rescale_percentiles(image), px))
    if not ((split == "train").any() and (split == "test").any()):
        raise ValueError(f"{data.root}: need cases in both the train and the test split")
    return Images(
        entry.name,
        np.stack(images),
        y,
        split,
        data.modality,
        entry.source,
        str(data.extra.get("licence", "")),
    )


def available(
    cohorts: Mapping[str, str], real_dir: str | Path
) -> tuple[list[Entry], dict[str, str]]:
    """The listed cohorts whose folder is here, and ``{name: why}`` for those that are not (an
    npz absent from this machine, or never converted: run the ``real_cohorts`` stage)."""
    sources = read_sources(real_dir)
    present, absent = [], {}
    for entry in entries(cohorts, real_dir):
        if (entry.folder / "dataset.json").is_file():
            present.append(entry)
        elif entry.converted:
            state = sources.get(entry.name, {})
            absent[entry.name] = state.get(
                "detail", f"not converted into {entry.folder} (dvc repro real_cohorts)"
            )
        else:
            raise ValueError(f"param cohorts: {entry.name}: {entry.source} is not a cohort folder")
        data = Path("data").resolve()  # the notebook runs in the repository
        if not entry.converted and data not in entry.folder.resolve().parents:
            log.warning(
                "%s: %s lies outside data/, which the matrix stage depends on: dvc repro will "
                "not notice a change in it",
                entry.name,
                entry.source,
            )
    return present, absent


# --------------------------------------------------------------------------- the methods


def _flat(X: np.ndarray) -> np.ndarray:
    return X.reshape(len(X), -1).astype(np.float64)


def _kmeans(k: int, seed: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    return KMeans(k, n_init=10, random_state=seed).fit(train).predict(test)


def _pixel_methods(
    images: Images, seed: int, dim: int, seconds: dict[str, float]
) -> dict[str, np.ndarray]:
    """The one-cluster row and k-means on the pixels and on PCA-d pixels."""
    Xtr, Xte, k = _flat(images.X[images.train]), _flat(images.X[images.test]), images.n_classes
    out = {"one_cluster": np.zeros(len(Xte), np.int64)}
    with timed(seconds, "raw_kmeans"):
        out["raw_kmeans"] = _kmeans(k, seed, Xtr, Xte)
    with timed(seconds, "pca_kmeans"):
        pca = PCA(min(dim, *Xtr.shape), svd_solver="full").fit(Xtr)
        out["pca_kmeans"] = _kmeans(k, seed, pca.transform(Xtr), pca.transform(Xte))
    return out


def _autoencoder(images: Images, seed: int, s: Settings):
    """The autoencoder of one seed, pretrained on the training split (best validation
    weights): the thesis' CAE for images, DEC's fully connected network for volumes
    (flattened). Returns the network and the arrays it reads, ``(train, test)``."""
    X = images.X if images.ndim == 2 else _flat(images.X).astype(np.float32)
    Xtr, Xte = X[images.train], X[images.test]
    Xval = X[images.val] if images.val.any() else None
    if images.ndim == 2:
        cae = CAEEmbedding(
            embedding_dim=s.embedding_dim, steps=s.pretrain_steps, batch_size=s.batch_size,
            lr=s.learning_rate, seed=seed, device=s.device,
        ).fit(Xtr, X_val=Xval)  # fmt: skip
        return cae.model_, Xtr, Xte
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLPAutoencoder((X.shape[1], 500, 500, 2000, s.embedding_dim))
    pretrain(
        model, Xtr, Xval, steps=s.pretrain_steps, batch_size=s.batch_size, lr=s.learning_rate,
        seed=seed,
    )  # fmt: skip
    return model.eval(), Xtr, Xte


def _autoencoder_methods(
    images: Images, seed: int, s: Settings, seconds: dict[str, float]
) -> dict[str, np.ndarray]:
    """The autoencoder pretrained once (:func:`_autoencoder`), then k-means on its embedding,
    DEC, IDEC, DCEC and DCN on it; every head's time includes the pretraining it starts
    from."""
    k = images.n_classes
    seed_everything(seed)
    pretrained = {}
    with timed(pretrained, "pretraining"):
        network, Xtr, Xte = _autoencoder(images, seed, s)
    schedule = dict(
        n_clusters=k, update_epochs=s.update_epochs, tol=s.tol, max_epochs=s.max_epochs,
        batch_size=s.batch_size, lr=s.learning_rate, seed=seed, device=s.device,
    )  # fmt: skip
    heads = {
        "dec": DEC(pretrained=network, **schedule),
        "idec": DCEC(pretrained=network, gamma=s.idec_gamma, **schedule),
        "dcec": DCEC(pretrained=network, gamma=s.dcec_gamma, **schedule),
        "dcn": DCN(
            pretrained=network, n_clusters=k, latent_dim=s.embedding_dim, lam=s.dcn_lambda,
            epochs=s.dcn_epochs, batch_size=s.batch_size, lr=s.learning_rate, seed=seed,
            device=s.device,
        ),
    }  # fmt: skip
    out = {}
    for name, head in heads.items():
        seed_everything(seed)
        with timed(seconds, name):
            head.fit(Xtr)
            out[name] = head.predict(Xte)
    with timed(seconds, "kmeans_cae"):  # the k-means that initialised DEC, on the test embedding
        out["kmeans_cae"] = pairwise_distances_argmin(
            encode(network, network_input(network, Xte)), heads["dec"].init_centers_
        )
    for name in out:
        seconds[name] += pretrained["pretraining"]
    return out


def _volume_methods(
    images: Images, seed: int, s: Settings, seconds: dict[str, float]
) -> dict[str, np.ndarray]:
    """JULE trained on ``jule_samples`` training volumes drawn with the seed (its
    agglomerative forward pass grows with the square of the samples; study 02 samples
    patches the same way) and DeepCluster's U-Net features pooled over each volume, each
    followed by k-means with as many clusters as classes, fitted on the training volumes."""
    k, V, out = images.n_classes, images.X, {}
    train, test = images.train, images.test
    with timed(seconds, "jule"):
        rows = np.flatnonzero(train)
        rng = np.random.default_rng(sub_seed(seed, 6))
        sample = np.sort(rng.choice(rows, min(s.jule_samples, len(rows)), replace=False))
        seed_everything(seed)
        jule = JULE(
            deep_padding=2, n_clusters=s.jule_clusters, epochs_per_period=s.jule_epochs_per_period,
            seed=seed, device=s.device,
        ).fit(V[sample])  # fmt: skip
        out["jule"] = _kmeans(k, seed, jule.transform(V[train]), jule.transform(V[test]))
    with timed(seconds, "deepcluster"):
        masks = np.ones(V.shape, dtype=bool)  # the whole volume: MedMNIST 3D is cropped to it
        seed_everything(seed)
        dc = DeepCluster(
            n_clusters=k, base_filters=s.deepcluster_filters, epochs=s.deepcluster_epochs,
            seed=seed, device=s.device,
        ).fit(V[train], masks[train])  # fmt: skip
        out["deepcluster"] = dc.assign(V[test], masks[test])
    return out


def _supervised(images: Images, seconds: dict[str, float]) -> np.ndarray:
    """The ceiling: logistic regression on the standardised pixels of the training split."""
    with timed(seconds, "logistic"):
        scaler = StandardScaler().fit(_flat(images.X[images.train]))
        model = LogisticRegression(max_iter=2000).fit(
            scaler.transform(_flat(images.X[images.train])), images.y[images.train]
        )
        return model.predict(scaler.transform(_flat(images.X[images.test])))


@dataclass
class CohortRuns:
    """The test labels of every ``(method, seed)`` of one cohort and the seconds each took."""

    images: Images
    predictions: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    seconds: dict[tuple[str, int], float] = field(default_factory=dict)

    def methods(self) -> list[str]:
        ran = {m for m, _ in self.predictions}
        return [m for m in METHODS if m in ran]

    def runs(self, method: str) -> list[np.ndarray]:
        return [p for (m, _), p in self.predictions.items() if m == method]


def run_cohort(images: Images, seeds: Sequence[int], settings: Settings) -> CohortRuns:
    """Every method of :data:`METHODS` that applies to the cohort, fitted on its training
    split for every seed (the supervised ceiling once: it is deterministic)."""
    runs = CohortRuns(images)
    for seed in seeds:
        seconds: dict[str, float] = {}
        preds = _pixel_methods(images, seed, settings.embedding_dim, seconds)
        preds |= _autoencoder_methods(images, seed, settings, seconds)
        if images.ndim == 3:
            preds |= _volume_methods(images, seed, settings, seconds)
        for method, pred in preds.items():
            runs.predictions[method, seed] = np.asarray(pred)
            runs.seconds[method, seed] = seconds.get(method, 0.0)
        log.info("%s, seed %d: %s", images.name, seed, {m: round(t, 1) for m, t in seconds.items()})
    seconds = {}
    runs.predictions["logistic", seeds[0]] = _supervised(images, seconds)
    runs.seconds["logistic", seeds[0]] = seconds["logistic"]
    return runs


# --------------------------------------------------------------------------- scores


@dataclass
class CohortScores:
    """One cohort's scores: every method on the same draws, the chance levels, the paired
    differences from :data:`BASELINE` on accuracy."""

    runs: CohortRuns
    scores: cmp.MethodScores
    chance: dict[str, list[cmp.Chance]]
    differences: list[cmp.Difference]


def score_cohort(runs: CohortRuns, n_boot: int = N_BOOT, n_perm: int = N_PERM) -> CohortScores:
    """ACC (plain for the supervised ceiling, else Hungarian), NMI and ARI of every method on
    the test images and on ``n_boot`` draws of them and of the seeds; each clustering's
    permutation chance level (its own cluster sizes); every other method minus
    :data:`BASELINE` on ACC and NMI, paired."""
    y = runs.images.y_test
    scores = cmp.MethodScores(cmp.Resamples(len(y), n_boot))
    chance = {}
    for method in runs.methods():
        preds = runs.runs(method)
        if method in SUPERVISED:
            correct = [(p == y).astype(float) for p in preds]
            scores.add(method, "acc", cmp.mean_scores(correct, scores.resamples))
            scores.add_partitions(method, y, preds, ("nmi", "ari"))
            continue
        scores.add_partitions(method, y, preds)
        chance[method] = [
            cmp.chance_level(y, preds, score, n_perm=n_perm) for score in cmp.PARTITION_SCORES
        ]
    methods = runs.methods()
    pairs = [(m, BASELINE) for m in methods if m not in (BASELINE, "one_cluster")]
    pairs += [(a, b) for a, b, _ in PAPER_CLAIMS if a in methods and b in methods]
    differences = [scores.compare(a, b, score) for a, b in pairs for score in ("acc", "nmi")]
    return CohortScores(runs, scores, chance, differences)


#: The verdict marks of the matrix: better / worse than the baseline, or cannot tell.
MARKS = {cmp.BETTER: "▲", cmp.WORSE: "▼", cmp.CANNOT_TELL: "="}


def cohort_rows(scored: CohortScores) -> pd.DataFrame:
    """One row per method of one cohort: ACC / NMI / ARI mean, sd over seeds and 95 % interval,
    the chance level of ACC with its p-value, the paired difference in ACC from
    :data:`BASELINE` with its interval and verdict, and the seconds per seed."""
    images, runs = scored.runs.images, scored.runs
    summary = scored.scores.summary()
    diffs = {d.a: d for d in scored.differences if d.score == "acc" and d.b == BASELINE}
    rows = []
    for method in runs.methods():
        c = {x.score: x for x in scored.chance.get(method, [])}
        d = diffs.get(method)
        seconds = [t for (m, _), t in runs.seconds.items() if m == method]
        rows.append(
            {
                "cohort": images.name,
                "method": method,
                "label": METHODS[method],
                "n_runs": len(runs.runs(method)),
                **{k: summary.loc[method, k] for k in summary.columns},
                "acc_chance": c["acc"].mean if c else np.nan,
                "acc_chance_high": c["acc"].high if c else np.nan,
                "acc_chance_p": c["acc"].p_value if c else np.nan,
                "nmi_chance": c["nmi"].mean if c else np.nan,
                "acc_diff": d.diff if d else np.nan,
                "acc_diff_low": d.low if d else np.nan,
                "acc_diff_high": d.high if d else np.nan,
                "verdict": d.verdict if d else "",
                "seconds_per_seed": float(np.mean(seconds)),
            }
        )
    return pd.DataFrame(rows)


def matrix_table(long: pd.DataFrame, value: str = "acc") -> pd.DataFrame:
    """Methods x cohorts, each cell ``mean ± sd [low, high]`` of ``value`` with the verdict
    mark against :data:`BASELINE` (▲ better, ▼ worse, = cannot tell)."""

    def cell(r) -> str:
        sd = r[f"{value}_std"]
        text = f"{r[f'{value}_mean']:.3f}" + (f" ± {sd:.3f}" if sd >= 5e-4 else "")
        text += f" [{r[f'{value}_ci_low']:.3f}, {r[f'{value}_ci_high']:.3f}]"
        return text + (f" {MARKS[r.verdict]}" if value == "acc" and r.verdict else "")

    table = long.assign(cell=[cell(r) for _, r in long.iterrows()]).pivot(
        index="method", columns="cohort", values="cell"
    )
    table = table.reindex([m for m in METHODS if m in table.index])
    table.index = [METHODS[m] for m in table.index]
    return table[list(dict.fromkeys(long.cohort))].fillna("n/a")


def runtime_table(long: pd.DataFrame) -> pd.DataFrame:
    """Methods x cohorts: seconds per seed of every cell (fit and prediction; a head's include
    the CAE pretraining it starts from)."""
    table = long.pivot(index="method", columns="cohort", values="seconds_per_seed")
    table = table.reindex([m for m in METHODS if m in table.index])
    table.index = [METHODS[m] for m in table.index]
    return table[list(dict.fromkeys(long.cohort))]


def plot_matrix(long: pd.DataFrame, absent: Mapping[str, str]) -> plt.Figure:
    """The matrix as a heatmap of test ACC (mean over seeds), each cell annotated with its
    95 % interval and verdict mark against :data:`BASELINE`; one column per cohort (absent
    cohorts greyed), n/a where a method does not apply (2D cohorts have no JULE or
    DeepCluster)."""
    cohorts = list(dict.fromkeys(long.cohort)) + list(absent)
    methods = [m for m in METHODS if m in set(long.method)]
    acc = np.full((len(methods), len(cohorts)), np.nan)
    text = np.full(acc.shape, "n/a", dtype=object)
    for _, r in long.iterrows():
        i, j = methods.index(r.method), cohorts.index(r.cohort)
        acc[i, j] = r.acc_mean
        mark = f" {MARKS[r.verdict]}" if r.verdict else ""
        text[i, j] = f"{r.acc_mean:.2f}{mark}\n[{r.acc_ci_low:.2f}, {r.acc_ci_high:.2f}]"
    for name in absent:
        text[:, cohorts.index(name)] = "absent"
    fig, ax = plt.subplots(figsize=(2.4 * len(cohorts) + 3.5, 0.55 * len(methods) + 1.6))
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.88")
    image = ax.imshow(np.ma.masked_invalid(acc), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for (i, j), label in np.ndenumerate(text):
        dark = np.isfinite(acc[i, j]) and acc[i, j] < 0.6
        ax.text(j, i, label, ha="center", va="center", fontsize=7, color="white" if dark else "k")
    ax.set_xticks(range(len(cohorts)), cohorts)
    ax.set_yticks(range(len(methods)), [METHODS[m] for m in methods], fontsize=8)
    ax.set_title(
        f"test ACC, mean over seeds [95 % CI]; ▲/▼/= better / worse / cannot tell vs "
        f"{METHODS[BASELINE]} (paired)",
        fontsize=9,
    )
    fig.colorbar(image, ax=ax, fraction=0.03, label="ACC")
    return fig


# --------------------------------------------------------------------------- report


def cohort_table(images: Sequence[Images], absent: Mapping[str, str]) -> pd.DataFrame:
    """What each cohort is: source, modality, 2D/3D, classes and the images per split; the
    absent ones with the reason."""
    rows = [
        {
            "cohort": im.name,
            "source": im.source,
            "modality": im.modality,
            "images": f"{im.ndim}D, {im.X.shape[1]} px per side",
            "classes": im.n_classes,
            "train / val / test": f"{int(im.train.sum())} / {int(im.val.sum())} / "
            f"{int(im.test.sum())}",
            "licence": im.licence,
        }
        for im in images
    ]
    rows += [{"cohort": name, "source": f"absent: {why}"} for name, why in absent.items()]
    return pd.DataFrame(rows).fillna("")


def differences_table(scored: Sequence[CohortScores]) -> pd.DataFrame:
    """Every paired difference of every cohort (``tables/differences``)."""
    return pd.concat(
        [cmp.differences_table(c.differences).assign(cohort=c.runs.images.name) for c in scored],
        ignore_index=True,
    )


def chance_table(scored: Sequence[CohortScores]) -> pd.DataFrame:
    """Every chance level of every cohort (``tables/chance_levels``)."""
    return pd.concat(
        [cmp.chance_table(c.chance).assign(cohort=c.runs.images.name) for c in scored],
        ignore_index=True,
    )


def _names(methods: Sequence[str]) -> str:
    return ", ".join(METHODS[m] for m in methods) if methods else "none"


def verdict(long: pd.DataFrame, absent: Mapping[str, str]) -> str:
    """The plain sentences: per cohort, which methods are better or worse than k-means on
    PCA-d pixels (paired), the best clustering against its chance level, and the supervised
    ceiling; then the cohorts that were absent."""
    parts = []
    for cohort, rows in long.groupby("cohort", sort=False):
        by = rows.set_index("method")
        clusterings = by.drop(index=[m for m in ("one_cluster", *SUPERVISED) if m in by.index])
        best = clusterings.acc_mean.idxmax()
        better = [m for m in by.index if by.verdict[m] == cmp.BETTER and m not in SUPERVISED]
        worse = [m for m in by.index if by.verdict[m] == cmp.WORSE]
        one = by.acc_mean.get("one_cluster", np.nan)
        text = (
            f"{cohort}: the best clustering is {METHODS[best]}, ACC "
            f"{by.acc_mean[best]:.3f} [{by.acc_ci_low[best]:.3f}, {by.acc_ci_high[best]:.3f}] "
            f"(chance at its cluster sizes {by.acc_chance[best]:.3f}; one cluster, the "
            f"majority class, {one:.3f}). Paired against {METHODS[BASELINE]} "
            f"({by.acc_mean[BASELINE]:.3f}), better: {_names(better)}; worse: {_names(worse)}; "
            "every other method cannot be told apart from it"
        )
        if "logistic" in by.index:
            text += f"; supervised ceiling {by.acc_mean['logistic']:.3f}"
        parts.append(text + ".")
    if absent:
        parts.append(f"Absent on this machine: {', '.join(absent)} (not run).")
    return " ".join(parts)


def paper_comparison(scored: Sequence[CohortScores]) -> list[dict]:
    """The papers' comparisons (:data:`PAPER_CLAIMS`) beside each cohort's paired difference in
    ACC and its verdict."""
    rows = []
    for c in scored:
        images = c.runs.images
        diffs = {(d.a, d.b): d for d in c.differences if d.score == "acc"}
        for a, b, claim in PAPER_CLAIMS:
            d = diffs.get((a, b))
            if d is None:
                continue
            rows.append(
                {
                    "quantity": f"{images.name}: {METHODS[a]} − {METHODS[b]}, ACC",
                    "paper": claim,
                    "this_run": f"{d.as_text()}: {d.verdict}",
                    "note": f"{images.modality}, {int(images.test.sum())} test images; paired "
                    f"on the same images, draws and seeds (won {d.runs_won} of {d.runs})",
                }
            )
    return rows


def matrix_metrics(
    long: pd.DataFrame, scored: Sequence[CohortScores], absent: Mapping[str, str]
) -> dict:
    """``metrics_all.json``: per cohort and method ACC / NMI / ARI (mean over seeds), the sd of
    ACC, its interval, the chance level of ACC, seconds per seed, and every paired difference;
    the counts of verdicts against :data:`BASELINE` (``metrics.json``) and the absent cohorts."""

    def by(column: str) -> dict:
        return {
            cohort: {r.method: float(r[column]) for _, r in rows.iterrows()}
            for cohort, rows in long.groupby("cohort", sort=False)
        }

    verdicts = long.loc[~long.method.isin(SUPERVISED), "verdict"]
    return {
        "acc": by("acc_mean"),
        "acc_sd": by("acc_std"),
        "nmi": by("nmi_mean"),
        "ari": by("ari_mean"),
        "acc_ci": {
            cohort: {r.method: [r.acc_ci_low, r.acc_ci_high] for _, r in rows.iterrows()}
            for cohort, rows in long.groupby("cohort", sort=False)
        },
        "acc_chance": by("acc_chance"),
        "seconds_per_seed": by("seconds_per_seed"),
        "difference": {
            c.runs.images.name: {
                f"{d.score}_{d.a}_vs_{d.b}": {"diff": d.diff, "ci": [d.low, d.high]}
                for d in c.differences
            }
            for c in scored
        },
        "n_test": {c.runs.images.name: int(c.runs.images.test.sum()) for c in scored},
        "cohorts": len(scored),
        "absent": len(absent),
        "absent_cohorts": sorted(absent),
        "better": int((verdicts == cmp.BETTER).sum()),
        "worse": int((verdicts == cmp.WORSE).sum()),
        "tied": int((verdicts == cmp.CANNOT_TELL).sum()),
    }


#: ``metrics.json``: the matrix in six numbers (every cell is in ``tables/metrics_all.json``).
HEADLINE = {
    "cohorts": "cohorts",
    "absent": "absent",
    "better": "better",
    "worse": "worse",
    "tied": "tied",
    "runtime_s": "runtime_s",
}
