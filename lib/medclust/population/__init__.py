"""Per-volume local features of a routine CT population, extracted in parallel with Dask.

Study 05 (population clustering of 7,812 routine lung CT volumes,
/work/shared/papers/004_8f822e2a6a11f707.txt, Sec. 2 "Identification of clusters" and Fig. 1a):
every volume is spatially normalised to a reference atlas through the best of several
templates (Eq. (1), :mod:`medclust.registration`), then local features are extracted "at
corresponding anatomical regions": densely sampled Haralick texture (item 1) and 3D SIFT
keypoints (item 2), each with its position in the atlas space (item 3, the input of the
spatio-visual vocabularies of :mod:`medclust.features.bovw`), restricted to the lung ("we
restrict the area of interest to the lung, so that only features extracted in the lung are
used", Sec. 3).

:func:`extract_volume` does one volume:

1. normalise: ``TemplateSet.normalize`` picks the template of maximal NCC (Eq. (1));
2. lung mask: the atlas lung labels (``lung_labels``) mapped onto the volume's grid;
3. dense Haralick (:func:`medclust.features.dense_haralick.dense_haralick`) inside the lung mask: HU
   clipped to ``[hu_min, hu_max]`` and binned into ``haralick_levels`` bins of equal width (IBSI
   fixed bin size with one range for the whole cohort), windows of ``haralick_window_mm`` on a
   grid of ``haralick_step_mm``, Haralick's f1-f13 of the 13-direction merged GLCM;
4. 3D SIFT (:class:`medclust.features.sift3d.SIFT3D`) on the whole image with HU mapped from
   ``[hu_min, hu_max]``, keypoints kept within ``sift_mask_margin_mm`` of the lung mask (nodules
   and effusions lie on the lung boundary), at most ``max_keypoints``, strongest first;
5. atlas positions (mm) of the Haralick window centres and of the keypoints.

The micro/macro split of the keypoints (<= 2 cm diameter) happens in the vocabulary step
(:func:`medclust.features.bovw.local_features`) from the stored ``sift_diameter_mm``.

The package, by step:

* :mod:`~medclust.population.params`: the parameters (:data:`DEFAULTS`, the
  ``population_features`` block of params.yaml with its paths) and their checks;
* :mod:`~medclust.population.extract`: the template set of the atlas cohort and
  :func:`extract_volume` (steps 1-5 above);
* :mod:`~medclust.population.store`: the per-case ``.npz`` files, ``index.csv`` and
  :func:`load_features`, which the study-05 notebook reads;
* :mod:`~medclust.population.runner`: :func:`extract_cohort`, serially or through Dask;
* :mod:`~medclust.population.cli`: the command line (``python -m medclust.population``).

Command line (the DVC stage ``population_features`` of study 05; the cohort, atlas and output
folders are the ``cohort``, ``atlas`` and ``out`` keys of the params block, each of which the
flags of the same name override)::

    python -m medclust.population --params params.yaml --section population_features \\
        [--cohort DIR] [--atlas DIR] [--out DIR] [--scheduler ADDR | --serial] [--workers N]
"""

from medclust.population.cli import main
from medclust.population.extract import build_template_set, extract_volume, hu_levels
from medclust.population.params import (
    DEFAULTS,
    PATH_KEYS,
    read_params,
    read_section,
    validate_params,
)
from medclust.population.runner import CaseExtractionError, extract_cohort
from medclust.population.store import (
    ARRAY_KEYS,
    INDEX_COLUMNS,
    INDEX_CSV,
    SCALAR_KEYS,
    case_file,
    load_features,
    npz_bytes,
)

__all__ = [
    "ARRAY_KEYS",
    "DEFAULTS",
    "INDEX_COLUMNS",
    "INDEX_CSV",
    "PATH_KEYS",
    "SCALAR_KEYS",
    "CaseExtractionError",
    "build_template_set",
    "case_file",
    "extract_cohort",
    "extract_volume",
    "hu_levels",
    "load_features",
    "main",
    "npz_bytes",
    "read_params",
    "read_section",
    "validate_params",
]
