"""medclust: reproducible notebooks of unsupervised deep clustering studies on medical images.

The notebooks in ``notebooks/`` call this small package for cohorts (``medclust.cohort``),
phantom data (``medclust_phantoms``), models (``medclust.models``), metrics, figures and
report outputs. See README.md for how the studies run as DVC stages.
"""

__version__ = "0.1.0"
