"""The template set of the study-05 paper (Fig. 2): templates registered to the atlas once
(:meth:`TemplateSet.build`), and the normalisation of a volume through the best of them
(:meth:`TemplateSet.normalize`, Eq. (1)) into a :class:`Normalization`.

Selection (Eq. (1)). For every template the atlas is resampled through ``T_eA o T_ie``
onto the volume's registration grid and correlated with the volume over its body (voxels
above ``body_threshold`` HU with the in-slice holes, i.e. the lungs, filled) where the warped
atlas is defined (inside the atlas's field of view: a template whose composition maps part of
the body outside the atlas is not charged for the atlas's missing slices). Ties go to the
lowest template index. Dense outputs (atlas image, labels, coordinate maps) are computed on
the volume's own grid, lazily, for the chosen composition only.

Pickling. :class:`TemplateSet` and :class:`Normalization` pickle; displacement fields are
rounded to float32 values when they are made, so they travel as float32 arrays without loss,
images travel as int16 / uint8 when that is lossless, and the cached coarse images are dropped
and rebuilt on demand: a template set of five templates at the demo scale pickles to ~7 MB
and can be shipped to Dask workers, or rebuilt in each worker from the same inputs with the
same result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from medclust.cohort import load_cohort
from medclust.registration.image import (
    LUNG_LABELS,
    Image3D,
    _as_points,
    _set_geometry,
    _to_numpy,
    itk_threads,
    ncc,
)
from medclust.registration.landmarks import (
    _LANDMARK_COLUMN,
    _landmark_affine,
    _landmark_pairs,
    read_landmarks,
)
from medclust.registration.pairwise import (
    RegistrationSettings,
    _centred_affine,
    _composite,
    _grid_centre,
    _pack,
    _position_search,
    _prepare,
    _Prepared,
    _register,
    _resample,
    _unpack,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- results


@dataclass(eq=False)
class Normalization:
    """The chosen map of one volume to the atlas (Eq. (1)) and the NCC of every candidate.

    ``parts`` are the chosen composition's transforms, ``[*T_eA, *T_ie]``; :attr:`transform`
    composes them into one map volume mm -> atlas mm (``T_eA o T_ie`` of template
    ``template_index``). Dense results are computed on the volume's own grid on first use and
    cached (the cache is not pickled).
    """

    template_index: int
    ncc: float
    ncc_all: list[float]
    parts: list[sitk.Transform] = field(repr=False)
    volume_shape: tuple[int, int, int] = field(repr=False)
    volume_affine: np.ndarray = field(repr=False)
    atlas: Image3D = field(repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def transform(self) -> sitk.CompositeTransform:
        """The map volume mm -> atlas mm as one SimpleITK transform."""
        if "transform" not in self._cache:
            self._cache["transform"] = _composite(self.parts)
        return self._cache["transform"]

    def __getstate__(self) -> dict:
        state = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_cache"}
        state["parts"] = [_pack(t) for t in self.parts]
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state["parts"] = [_unpack(p) for p in state["parts"]]
        self.__dict__.update(state, _cache={})

    def _reference(self) -> sitk.Image:
        ref = sitk.Image([int(n) for n in self.volume_shape], sitk.sitkFloat32)
        spacing = np.linalg.norm(self.volume_affine[:3, :3], axis=0)
        _set_geometry(ref, spacing, self.volume_affine)
        return ref

    def _point_map(self) -> np.ndarray:
        """Atlas mm of every voxel centre of the volume, shape (x, y, z, 3)."""
        if "points" not in self._cache:
            f = sitk.TransformToDisplacementFieldFilter()
            f.SetReferenceImage(self._reference())
            f.SetOutputPixelType(sitk.sitkVectorFloat64)
            f.SetNumberOfThreads(1)
            disp = _to_numpy(f.Execute(self.transform))
            idx = np.stack(np.meshgrid(*[np.arange(n) for n in self.volume_shape], indexing="ij"))
            mm = np.einsum("ij,jxyz->xyzi", self.volume_affine[:3, :3], idx)
            self._cache["points"] = mm + self.volume_affine[:3, 3] + disp
        return self._cache["points"]

    def to_atlas_mm(self, points_vox: np.ndarray) -> np.ndarray:
        """Atlas mm (n, 3) of volume voxel indices (n, 3) in the array's (x, y, z) order.

        Points inside the volume's grid are interpolated (trilinearly; exact at integer
        indices) in the dense map of voxel centres; points outside it go through the
        transform one by one.
        """
        pts = _as_points(points_vox, "points_vox")
        out = np.empty_like(pts)
        upper = np.asarray(self.volume_shape) - 1
        inside = np.all((pts >= 0) & (pts <= upper), axis=1)
        if inside.any():
            dense = self._point_map()
            coords = pts[inside].T
            out[inside] = np.stack(
                [
                    ndi.map_coordinates(dense[..., c], coords, order=1, mode="nearest")
                    for c in range(3)
                ],
                axis=1,
            )
        if (~inside).any():
            mm = pts[~inside] @ self.volume_affine[:3, :3].T + self.volume_affine[:3, 3]
            out[~inside] = [self.transform.TransformPoint(tuple(p)) for p in mm]
        return out

    def atlas_labels(self) -> np.ndarray:
        """Atlas labelmap resampled (nearest neighbour) onto the volume grid, axes (x, y, z)."""
        if "labels" not in self._cache:
            if self.atlas.labelmap is None:
                raise ValueError("Normalization: the atlas has no labelmap")
            warped = _resample(
                self.atlas.to_sitk(labels=True),
                self._reference(),
                self.transform,
                0,
                1,
                sitk.sitkNearestNeighbor,
            )
            self._cache["labels"] = _to_numpy(warped).astype(self.atlas.labelmap.dtype)
        return self._cache["labels"]

    def atlas_image(self) -> np.ndarray:
        """Atlas image resampled (linearly) onto the volume grid, axes (x, y, z), float32;
        outside the atlas the atlas's minimum (air for CT)."""
        if "image" not in self._cache:
            warped = _resample(
                self.atlas.to_sitk(),
                self._reference(),
                self.transform,
                float(self.atlas.array.min()),
                1,
            )
            self._cache["image"] = _to_numpy(warped).astype(np.float32)
        return self._cache["image"]


def lung_mask(normalization: Normalization, lung_labels: Sequence[int] = LUNG_LABELS) -> np.ndarray:
    """Boolean mask of the volume's voxels that the warped atlas labels as lung."""
    labels = normalization.atlas_labels()
    lung_labels = [int(v) for v in np.atleast_1d(lung_labels)]
    if not np.isin(normalization.atlas.labelmap, lung_labels).any():
        raise ValueError(f"lung_mask: the atlas labelmap has none of lung_labels {lung_labels}")
    return np.isin(labels, lung_labels)


# --------------------------------------------------------------------------- template set


class TemplateSet:
    """An atlas, templates registered to it once, and the normalisation of new volumes through
    them (Fig. 2 and Eq. (1) of the study-05 paper). Build with :meth:`build` or
    :meth:`from_cohort`."""

    def __init__(
        self,
        atlas: Image3D,
        templates: list[Image3D],
        template_to_atlas: list[list[sitk.Transform]],
        settings: RegistrationSettings,
        landmark_error_mm: list[float] | None = None,
    ) -> None:
        self.atlas = atlas
        self.templates = list(templates)
        self.template_to_atlas = template_to_atlas
        self.settings = settings
        self.landmark_error_mm = landmark_error_mm or [float("nan")] * len(templates)
        self._prepared: dict = {}

    def __len__(self) -> int:
        return len(self.templates)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_prepared"] = {}  # coarse images are rebuilt on demand
        state["template_to_atlas"] = [[_pack(t) for t in parts] for parts in self.template_to_atlas]
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state["template_to_atlas"] = [
            [_unpack(p) for p in parts] for parts in state["template_to_atlas"]
        ]
        self.__dict__.update(state)

    def _prep(self, key: tuple[str, int], spacing_mm: float) -> _Prepared:
        which, index = key
        cache_key = (which, index, float(spacing_mm))
        if cache_key not in self._prepared:
            image = self.atlas if which == "atlas" else self.templates[index]
            self._prepared[cache_key] = _prepare(image, spacing_mm, self.settings)
        return self._prepared[cache_key]

    @classmethod
    def build(
        cls,
        atlas: Image3D,
        templates: list[Image3D],
        *,
        atlas_landmarks: Mapping[str, Sequence[float]] | np.ndarray | None = None,
        template_landmarks: Sequence[Mapping[str, Sequence[float]] | np.ndarray | None]
        | None = None,
        nonlinear: bool = True,
        seed: int = 0,
        **settings,
    ) -> TemplateSet:
        """Register every template to the atlas once (``T_eA``).

        With landmarks (``atlas_landmarks`` and one entry per template, a mapping name -> xyz
        mm or an (n, 3) array in the same order; ``None`` entries fall back) the initial
        transform is the least-squares affine through the landmark pairs; otherwise it is the
        position search of :meth:`normalize`. Then affine and (``nonlinear``) Demons on the
        ``template_spacing_mm`` grid. Further keyword arguments are the fields of
        :class:`RegistrationSettings`.
        """
        unknown = sorted(set(settings) - {f.name for f in fields(RegistrationSettings)})
        if unknown:
            raise TypeError(
                f"TemplateSet.build: unknown setting(s) {unknown}; known: "
                f"{sorted(f.name for f in fields(RegistrationSettings))}"
            )
        config = RegistrationSettings(nonlinear=nonlinear, seed=seed, **settings)
        if not isinstance(atlas, Image3D):
            raise TypeError(f"TemplateSet.build: atlas must be an Image3D, got {type(atlas)}")
        if atlas.labelmap is None or not np.any(atlas.labelmap):
            raise ValueError("TemplateSet.build: the atlas labelmap is missing or empty")
        templates = list(templates)
        if not templates:
            raise ValueError("TemplateSet.build: templates is empty; give at least one template")
        for i, t in enumerate(templates):
            if not isinstance(t, Image3D):
                raise TypeError(f"TemplateSet.build: templates[{i}] must be an Image3D")
        if template_landmarks is not None:
            if atlas_landmarks is None:
                raise ValueError(
                    "TemplateSet.build: template_landmarks given without atlas_landmarks"
                )
            if len(template_landmarks) != len(templates):
                raise ValueError(
                    f"TemplateSet.build: template_landmarks has {len(template_landmarks)} "
                    f"entries for {len(templates)} templates"
                )
        out = cls(atlas, templates, [], config)
        with itk_threads(config.n_threads):
            atlas_prep = out._prep(("atlas", 0), config.template_spacing_mm)
            errors = []
            for i in range(len(templates)):
                start = time.perf_counter()
                fixed = out._prep(("template", i), config.template_spacing_mm)
                lm = None if template_landmarks is None else template_landmarks[i]
                pairs = None
                if lm is not None:
                    pairs = _landmark_pairs(lm, atlas_landmarks, f"template_landmarks[{i}]")
                    initial = _landmark_affine(pairs[0], pairs[1], _grid_centre(fixed.image))
                else:
                    shift = _position_search(fixed, atlas_prep, config)
                    initial = _centred_affine(
                        sitk.TranslationTransform(3, shift.tolist()), _grid_centre(fixed.image)
                    )
                parts = _register(
                    fixed,
                    atlas_prep,
                    initial,
                    config.template_affine_iterations,
                    config.template_nonlinear_iterations,
                    1.0,  # once per template: every voxel counts
                    config,
                )
                out.template_to_atlas.append(parts)
                err = float("nan")
                if pairs is not None:
                    comp = _composite(parts)
                    mapped = np.array([comp.TransformPoint(tuple(p)) for p in pairs[0]])
                    err = float(np.linalg.norm(mapped - pairs[1], axis=1).mean())
                errors.append(err)
                log.info(
                    "template %d -> atlas registered in %.2f s (landmark error %.1f mm)",
                    i,
                    time.perf_counter() - start,
                    err,
                )
        out.landmark_error_mm = errors
        return out

    @classmethod
    def from_cohort(cls, cohort, *, use_landmarks: bool = True, **kwargs) -> TemplateSet:
        """Build from an atlas cohort folder (or loaded :class:`medclust.cohort.Cohort`) whose
        ``clinical.csv`` has a ``role`` column (one ``atlas``, the rest ``template``) and,
        optionally, ``lm_<name>_x/_y/_z`` landmark columns (as ``routine_ct_atlas`` writes)."""
        if isinstance(cohort, str | Path):
            cohort = load_cohort(cohort)
        clinical = cohort.clinical.reset_index()
        if "role" not in clinical.columns:
            raise ValueError(f"{cohort.root}: clinical.csv has no 'role' column (atlas/template)")
        roles = dict(zip(clinical["case_id"], clinical["role"], strict=True))
        atlas_ids = [c for c in cohort.case_ids if roles.get(c) == "atlas"]
        template_ids = [c for c in cohort.case_ids if roles.get(c) == "template"]
        if len(atlas_ids) != 1:
            raise ValueError(
                f"{cohort.root}: need exactly one case with role 'atlas', got {len(atlas_ids)}"
            )
        atlas = Image3D.from_volume(cohort.load(atlas_ids[0]))
        templates = [Image3D.from_volume(cohort.load(c)) for c in template_ids]
        if use_landmarks and any(_LANDMARK_COLUMN.match(str(c)) for c in clinical.columns):
            kwargs.setdefault("atlas_landmarks", read_landmarks(clinical, atlas_ids[0]))
            kwargs.setdefault(
                "template_landmarks", [read_landmarks(clinical, c) for c in template_ids]
            )
        return cls.build(atlas, templates, **kwargs)

    def normalize(
        self, volume: Image3D, *, template_indices: Sequence[int] | None = None
    ) -> Normalization:
        """Register ``volume`` to every template (or to ``template_indices``), compose with
        each ``T_eA`` and return the composition whose warped atlas correlates best with the
        volume over its body (Eq. (1)); ``ncc_all`` lists the NCC per template considered."""
        if not isinstance(volume, Image3D):
            raise TypeError(f"normalize: volume must be an Image3D, got {type(volume).__name__}")
        indices = list(range(len(self))) if template_indices is None else list(template_indices)
        if not indices or any(not 0 <= int(i) < len(self) for i in indices):
            raise ValueError(
                f"normalize: template_indices must be non-empty indices in 0..{len(self) - 1}, "
                f"got {template_indices!r}"
            )
        with itk_threads(self.settings.n_threads):
            config = self.settings
            spacing = config.registration_spacing_mm
            fixed = _prepare(volume, spacing, config)
            atlas_prep = self._prep(("atlas", 0), spacing)
            centre = _grid_centre(fixed.image)
            scores, candidates = [], []
            for i in indices:
                moving = self._prep(("template", int(i)), spacing)
                shift = _position_search(fixed, moving, config)
                initial = _centred_affine(sitk.TranslationTransform(3, shift.tolist()), centre)
                parts = _register(
                    fixed,
                    moving,
                    initial,
                    config.affine_iterations,
                    config.nonlinear_iterations,
                    config.sampling_fraction,
                    config,
                )
                chain = [*self.template_to_atlas[int(i)], *parts]
                composite = _composite(chain)
                # NaN outside the atlas: Eq. (1) compares the images where both are defined
                warped = _to_numpy(
                    _resample(atlas_prep.image, fixed.image, composite, np.nan, config.n_threads)
                )
                overlap = fixed.body & np.isfinite(warped)
                scores.append(ncc(fixed.array, warped, overlap) if overlap.sum() >= 8 else -1.0)
                candidates.append(chain)
        best = int(np.argmax(scores))
        log.debug(
            "normalize: NCC per template %s -> template %d", np.round(scores, 4), indices[best]
        )
        return Normalization(
            template_index=int(indices[best]),
            ncc=float(scores[best]),
            ncc_all=[float(s) for s in scores],
            parts=candidates[best],
            volume_shape=volume.shape,
            volume_affine=volume.affine.copy(),
            atlas=self.atlas,
        )
