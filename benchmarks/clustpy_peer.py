"""ClustPy 0.0.3 side of the peer-validation benchmark (k-means, DEC, IDEC, DCN on digits).

ClustPy is not a project dependency: ``make benchmark-env`` installs it with ``--no-deps`` into
``build/clustpy``, which :func:`import_clustpy` puts on ``sys.path``. Paths below are inside
that folder (``clustpy/...``), as installed from the ``clustpy==0.0.3`` sdist.

ClustPy defaults that already equal the benchmark's settings (so :func:`run_clustpy` passes
only ``n_clusters``, ``random_state``, ``device`` and the two epoch counts, the latter to make
them explicit):

* batch size 256, 100 pretraining and 150 clustering epochs, Adam, embedding size 10:
  ``deep/dec.py:493-499`` (DEC), ``deep/dec.py:649-656`` (IDEC), ``deep/dcn.py:456-461`` (DCN);
* learning rates 1e-3 (pretraining) and 1e-4 (clustering), set when left ``None``:
  ``deep/_abstract_deep_clustering_algo.py:77-84``;
* autoencoder ``d-500-500-2000-10``: ``deep/_train_utils.py:31``, a ``FeedforwardAutoencoder``
  with LeakyReLU (not ReLU), linear embedding and output, no batch norm or dropout:
  ``deep/neural_networks/feedforward_autoencoder.py:62-82``,
  ``deep/neural_networks/_abstract_autoencoder.py:56-71``;
* reconstruction loss: squared error summed over features, averaged over the batch
  (``deep/_utils.py:32-59``), not ``torch.nn.MSELoss``'s per-element mean;
* DEC: alpha 1, no reconstruction term; IDEC: clustering weight 0.1, reconstruction weight 1;
  DCN: clustering weight 0.1 (times 0.5, ``deep/dcn.py:296``), reconstruction weight 1;
* k-means init: sklearn ``KMeans(n_clusters, random_state=...)`` with sklearn's default
  ``n_init`` on the embedding (``deep/_utils.py:241-242``); a fixed number of epochs, no
  tolerance stop; no augmentation.

``labels_`` (what ClustPy's own evaluation scores, ``utils/evaluation.py:509``) comes from a
*final k-means on the trained embedding* (``deep/dec.py:110-113``, ``deep/dcn.py:106-108``); the
head's own assignment is ``dec_labels_`` / ``dcn_labels_`` (:func:`run_clustpy` returns both).

Data scaling: the authors' experiments with ClustPy's DEC/DCN at 100/150 epochs z-normalise
Optdigits (of which sklearn's digits is the test part) with one global mean and std over all
pixels (``image_normalize`` in github.com/collinleiber/UNSEEN ``unseen.py``; the same ``znorm``
is in ClustPy's README, example 4, and is ``clustpy.data.z_normalization`` at its default
``feature_or_channel_wise=False``, ``data/preprocessing.py:49-52``). README example 3 runs DEC
on raw 0-16 pixels. :func:`load_digits_znorm` applies the global z-normalisation.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

METHODS = ("kmeans", "DEC", "IDEC", "DCN")
REPO_ROOT = Path(__file__).resolve().parents[1]


def import_clustpy(path: str | Path = "build/clustpy"):
    """Put the ``--no-deps`` ClustPy install on ``sys.path`` and import it.

    Parameters
    ----------
    path : str or Path
        Folder that holds the ``clustpy`` package; a relative path is taken from the
        repository root.

    Returns
    -------
    module
        The imported ``clustpy`` package.

    Raises
    ------
    ImportError
        If the folder or the package is missing (run ``make benchmark-env``).
    """
    folder = Path(path)
    folder = folder if folder.is_absolute() else REPO_ROOT / folder
    if not (folder / "clustpy" / "__init__.py").is_file():
        raise ImportError(
            f"ClustPy is not installed in {folder}; run `make benchmark-env` "
            "(pip install --no-deps --target build/clustpy clustpy==0.0.3)"
        )
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    import clustpy

    return clustpy


def load_digits_znorm() -> tuple[np.ndarray, np.ndarray]:
    """Return sklearn's digits (1,797 x 64) z-normalised with one global mean and std.

    Returns
    -------
    X : np.ndarray
        ``(X - X.mean()) / X.std()`` as float64.
    y : np.ndarray
        The digit labels.
    """
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X - X.mean()) / X.std(), y


def run_clustpy(
    method: str,
    X: np.ndarray,
    n_clusters: int,
    seed: int,
    *,
    pretrain_epochs: int = 100,
    clustering_epochs: int = 150,
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Cluster ``X`` with ClustPy's k-means baseline, DEC, IDEC or DCN at its defaults.

    Parameters
    ----------
    method : {"kmeans", "DEC", "IDEC", "DCN"}
        ``"kmeans"`` is sklearn's ``KMeans`` on ``X`` (as ClustPy uses it), the others
        ``clustpy.deep``'s classes.
    X : np.ndarray
        Data, one sample per row, already scaled (see :func:`load_digits_znorm`).
    n_clusters : int
        Number of clusters.
    seed : int
        ``random_state``; ClustPy also seeds torch, numpy's and Python's global generators
        from it (``deep/_utils.py:10-29``).
    pretrain_epochs, clustering_epochs : int
        Epochs; the defaults are ClustPy's and the benchmark's (smaller only for smoke tests).
    device : str or None
        Torch device; ``None`` lets ClustPy pick (a GPU if one is visible).

    Returns
    -------
    labels : np.ndarray
        ``labels_``, what ClustPy's evaluation scores (a final k-means for the deep methods).
    head_labels : np.ndarray or None
        The DEC / DCN head's own assignment (``dec_labels_`` / ``dcn_labels_``), None for
        k-means.
    seconds : float
        Wall time of ``fit`` (pretraining, k-means init, clustering, final k-means).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if method == "kmeans":
        from sklearn.cluster import KMeans

        model = KMeans(n_clusters=n_clusters, random_state=seed)
    else:
        import_clustpy()
        import clustpy.deep

        model = getattr(clustpy.deep, method)(
            n_clusters=n_clusters,
            pretrain_epochs=pretrain_epochs,
            clustering_epochs=clustering_epochs,
            device=device,
            random_state=seed,
        )
    start = time.perf_counter()
    model.fit(X)
    seconds = time.perf_counter() - start
    attr = {"DEC": "dec_labels_", "IDEC": "dec_labels_", "DCN": "dcn_labels_"}.get(method)
    head = None if attr is None else np.asarray(getattr(model, attr))
    return np.asarray(model.labels_), head, seconds
