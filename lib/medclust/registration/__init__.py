"""Multi-template spatial normalisation (study 05; /work/shared/papers/004_8f822e2a6a11f707.txt,
Sec. 2 "Spatial Normalization", Fig. 2 and Eq. (1)), wrapping SimpleITK.

The paper maps every routine CT volume ``I_i`` to one reference atlas ``A`` through a set of
templates ``E_1..E_E`` that cover the population's variability:

* **build** (:meth:`TemplateSet.build`, once): every template is registered to the atlas,
  "carefully supervised and supported by manually annotated landmarks" -> ``T_eA``;
* **normalise** (:meth:`TemplateSet.normalize`, per volume): the volume is registered to every
  template (initial position estimate, affine, non-linear) -> ``T_ie``; the compositions
  ``T_eA o T_ie`` are candidate maps to the atlas, and the one that maximises the normalised
  cross-correlation of the atlas warped into the volume with the volume is chosen (Eq. (1)).

Conventions. An :class:`Image3D` holds a volume as medclust stores it: array axes (x, y, z),
axial slices along the last axis, and the 4x4 voxel -> mm affine of its NIfTI file (as
:func:`medclust.cohort.nifti_bytes` writes it: ``diag(spacing)``). Physical space here is the
space of that affine, used as is (no RAS -> LPS flip): registration only needs every image in
one consistent frame, and points come back in the same mm as the cohort's landmark columns.
Transforms follow ITK: the fixed image is the volume (or, in the build, the template) and a
transform maps a *fixed* point to the corresponding *moving* point. The chosen composition
therefore maps volume mm -> atlas mm, which is exactly what is needed both to carry volume
coordinates into the atlas (:meth:`Normalization.to_atlas_mm`) and to pull atlas labels back
onto the volume grid (:meth:`Normalization.atlas_labels`). Because the volume is the fixed
image, a partial field of view (a fragment) only asks for its own voxels to be matched inside
the larger template.

The package, by idea:

* :mod:`~medclust.registration.image`: the :class:`Image3D` carrier, its SimpleITK
  conversion, the process-wide ITK thread setting (:func:`itk_threads`), :func:`ncc`, :func:`dice`;
* :mod:`~medclust.registration.pairwise`: one image registered to another (coarse grids,
  initial position search, affine, Demons; :class:`RegistrationSettings`) and the choices made;
* :mod:`~medclust.registration.landmarks`: landmark tables and the landmark initialisation;
* :mod:`~medclust.registration.templates`: :class:`TemplateSet` (build ``T_eA``, normalise
  with Eq. (1)), the chosen :class:`Normalization` and :func:`lung_mask`.

Measured (``reports/benchmarks/registration.md``: 40 of the 200 default phantom patients, five
templates, one core): lung Dice of the warped atlas labels 0.93 on full fields of view and 0.90
on fragments (0.90 / 0.87 without the Demons stage); mean landmark error 5 mm (full) and 9 mm
(fragments) at 7.5 x 7.5 x 8 mm voxels, pleural effusions being the main failure (the atlas
lungs then fill the pleural space); 0.72 s per full volume and 0.44 s per fragment on one
core for five templates, 0.15 s for one. On these phantoms the templates differ only by smooth
deformations of one anatomy, so choosing among five adds little over one template once the
Demons stage runs (Dice 0.930 vs 0.928); with the affine stage only it adds ~0.01.
"""

from medclust.registration.image import (
    LUNG_LABELS,
    Image3D,
    _as_points,
    _to_numpy,
    dice,
    itk_threads,
    ncc,
)
from medclust.registration.landmarks import read_landmarks
from medclust.registration.pairwise import RegistrationSettings
from medclust.registration.templates import Normalization, TemplateSet, lung_mask

__all__ = [
    "LUNG_LABELS",
    "Image3D",
    "Normalization",
    "RegistrationSettings",
    "TemplateSet",
    "_as_points",
    "_to_numpy",
    "dice",
    "itk_threads",
    "lung_mask",
    "ncc",
    "read_landmarks",
]
