"""One patient of the routine chest CT phantom before rendering: the per-patient transform
(:class:`Geometry`: affine plus smooth plane-wave deformation, and the full-FOV grid it maps),
the case's random streams, the draws of its findings and demography (:class:`PatientPlan`,
:func:`plan_patient`) and its field of view (:func:`fov_slab`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from medclust_phantoms.exact import (
    contract,
    det3,
    inv3,
    norm,
    polar_rotation,
    rotation_xyz,
    unit,
)
from medclust_phantoms.routine_ct.anatomy import LOBES
from medclust_phantoms.routine_ct.population import (
    _DEMOGRAPHY,
    DEFAULTS,
    FINDING_PROBABILITY,
    FINDINGS,
    NAME,
    PHENOTYPES,
    RENDERED_FINDINGS,
)

# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True, eq=False)
class Geometry:
    """A patient's transform. Patient coordinates ``q`` (mm, relative to the centre of the
    full-FOV grid) map to canonical coordinates ``c = linear^-1 (q - shift) - u(q)`` with the
    smooth displacement ``u(q) = sum_j amp_j cos(k_j . q + phase_j)`` (plane waves)."""

    linear: np.ndarray  # 3x3, canonical -> patient (rotation times scale)
    shift: np.ndarray  # (3,) mm
    wave_vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (J, 3) rad/mm
    wave_phases: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (J,)
    wave_amplitudes: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (J, 3) mm

    def displacement(self, q: np.ndarray) -> np.ndarray:
        """``u(q)`` for points ``q`` of shape (3, N)."""
        if len(self.wave_phases) == 0:
            return np.zeros_like(q)
        phase = contract(self.wave_vectors, q) + self.wave_phases[:, None]
        return contract(self.wave_amplitudes.T, np.cos(phase))

    def to_canonical(self, q: np.ndarray) -> np.ndarray:
        """Canonical coordinates of patient points ``q`` (3, N)."""
        q = np.asarray(q, float)
        return contract(inv3(self.linear), q - self.shift[:, None]) - self.displacement(q)

    def from_canonical(self, c: np.ndarray, tol: float = 1e-9) -> np.ndarray:
        """Patient points ``q`` (3, N) with ``to_canonical(q) == c``, by the fixed-point
        iteration ``q = shift + linear (c + u(q))`` (a contraction: the displacement is
        Lipschitz-bounded by 0.45 and the scale by 1.12)."""
        c = np.asarray(c, float)
        q = self.shift[:, None] + contract(self.linear, c)
        for _ in range(200):
            new = self.shift[:, None] + contract(self.linear, c + self.displacement(q))
            done = float(np.abs(new - q).max()) < tol
            q = new
            if done:
                break
        return q

    @property
    def scale(self) -> float:
        return float(abs(det3(self.linear)) ** (1.0 / 3.0))

    @property
    def rotation_deg(self) -> float:
        """Angle of the rotation part of ``linear`` (polar decomposition)."""
        rot = polar_rotation(self.linear)
        return float(np.rad2deg(np.arccos(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0))))

    @property
    def deformation_rms_mm(self) -> float:
        """RMS magnitude of the displacement (averaged over phases)."""
        return float(np.sqrt((self.wave_amplitudes**2).sum() / 2.0))


IDENTITY = Geometry(linear=np.eye(3), shift=np.zeros(3))

_MAX_LIPSCHITZ = 0.45  # bound on |grad u|: keeps the map invertible and the iteration fast


def draw_geometry(rng: np.random.Generator, deformation_mm: float) -> Geometry:
    """A random patient transform: scale ``U(0.9, 1.1)`` times a per-axis ``U(0.96, 1.04)``
    (clipped to 0.88..1.12), rotation ``U(-3, 3)`` degrees about x and y and ``U(-5, 5)``
    about z, shift ``U(-12, 12)`` mm in x, y and ``U(-8, 8)`` mm in z, and six plane waves
    (wavelength 160-360 mm) with RMS displacement ``U(0.4, 1) * deformation_mm``."""
    scale = np.clip(rng.uniform(0.9, 1.1) * rng.uniform(0.96, 1.04, 3), 0.88, 1.12)
    angles = [rng.uniform(-3.0, 3.0), rng.uniform(-3.0, 3.0), rng.uniform(-5.0, 5.0)]
    shift = np.array([rng.uniform(-12.0, 12.0), rng.uniform(-12.0, 12.0), rng.uniform(-8.0, 8.0)])
    n_waves = 6
    directions = rng.normal(size=(n_waves, 3))
    directions = unit(directions, axis=1)
    wavelengths = rng.uniform(160.0, 360.0, n_waves)
    vectors = directions * (2.0 * np.pi / wavelengths)[:, None]
    phases = rng.uniform(0.0, 2.0 * np.pi, n_waves)
    amplitudes = rng.normal(size=(n_waves, 3))
    rms = rng.uniform(0.4, 1.0) * deformation_mm
    current = float(np.sqrt((amplitudes**2).sum() / 2.0))
    amplitudes *= rms / current if current > 0 else 0.0
    lipschitz = float((norm(amplitudes, axis=1) * norm(vectors, axis=1)).sum())
    if lipschitz > _MAX_LIPSCHITZ:
        amplitudes *= _MAX_LIPSCHITZ / lipschitz
    return Geometry(
        linear=rotation_xyz(np.deg2rad(angles)) * scale[None, :],  # R diag(scale)
        shift=shift,
        wave_vectors=vectors,
        wave_phases=phases,
        wave_amplitudes=amplitudes,
    )


def grid_centre(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """Physical position (mm, write_cohort's affine) of the centre of a full-FOV grid."""
    return (np.asarray(shape, float) - 1.0) / 2.0 * np.asarray(spacing, float)


def grid_points(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """Patient coordinates ``q`` (3, N; C order of ``shape``) of the voxel centres of a
    full-FOV grid, relative to its centre."""
    axes = [
        (np.arange(n, dtype=float) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing, strict=True)
    ]
    return np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")])


def canonical_coordinates(
    geometry: Geometry, shape: Sequence[int], spacing: Sequence[float]
) -> np.ndarray:
    """Canonical coordinates (3, *shape) of every voxel centre of a full-FOV grid."""
    return geometry.to_canonical(grid_points(shape, spacing)).reshape(3, *shape)


# --------------------------------------------------------------------------- cases


_TAG = 0x0C7  # entropy tag of this generator's streams (the atlas uses its own)
_STREAMS = (
    "meta",
    "geometry",
    "lung",
    "noise",
    "report",
    *(f"detail_{f}" for f in FINDINGS),
    *(f"texture_{f}" for f in RENDERED_FINDINGS),
)


def case_streams(seed: int, i: int, tag: int = _TAG) -> dict[str, np.random.Generator]:
    """Fresh independent generators of case ``i``, one per purpose (:data:`_STREAMS`),
    children of ``SeedSequence([seed, tag], spawn_key=(i,))``; independent of the cohort
    size."""
    seq = np.random.SeedSequence([seed, tag], spawn_key=(i,))
    return {
        name: np.random.default_rng(child)
        for name, child in zip(_STREAMS, seq.spawn(len(_STREAMS)), strict=True)
    }


def _pick(rng: np.random.Generator, options: Sequence, p: Sequence[float] | None = None):
    """One of ``options`` (weights ``p``, normalised)."""
    if p is None:
        return options[int(rng.integers(len(options)))]
    w = np.asarray(p, float)
    return options[int(rng.choice(len(options), p=w / w.sum()))]


def _finding_details(rng: np.random.Generator, name: str, phenotype: str) -> dict:
    """Per-finding draws (severity, side, lobe, sizes...), made whether or not the finding is
    present so that switching it on for a test uses the same draws."""
    s = float(rng.uniform(0.15, 1.0))
    d: dict = {"severity": s}
    if name == "emphysema":
        d["fraction"] = 0.08 + 0.27 * s
    elif name == "nodule":
        if phenotype == "lung_cancer":
            sizes = [rng.uniform(14.0, 25.0)] + list(rng.uniform(5.0, 9.0, rng.integers(0, 3)))
            p_lobe = (0.35, 0.08, 0.15, 0.30, 0.12)
        else:
            sizes = list(rng.uniform(5.0, 12.0, rng.integers(1, 3)))
            p_lobe = (0.25, 0.10, 0.20, 0.25, 0.20)
        d["diameters"] = tuple(round(float(v), 1) for v in sizes)
        d["lobes"] = tuple(_pick(rng, tuple(LOBES), p_lobe) for _ in sizes)
        d["hu"] = float(rng.uniform(15.0, 45.0))
    elif name == "pleural_effusion":
        p_side = (0.25, 0.15, 0.60) if phenotype == "heart_failure" else (0.45, 0.35, 0.20)
        d["side"] = _pick(rng, ("right", "left", "bilateral"), p_side)
        d["height_mm"] = 35.0 + 75.0 * s
    elif name == "consolidation":
        d["lobe"] = _pick(rng, tuple(LOBES), (0.15, 0.12, 0.30, 0.15, 0.28))
        d["extent"] = 0.35 + 0.6 * s  # share of the lobe
        d["hu"] = float(rng.uniform(-60.0, 35.0))
        d["air_bronchogram"] = bool(rng.random() < 0.5)
    elif name == "fibrosis":
        d["depth_mm"] = 12.0 + 13.0 * s
        d["fraction"] = 0.05 + 0.15 * s
    elif name == "ground_glass":
        by_phenotype = {
            "heart_failure": (0.2, 0.1, 0.45, 0.25),
            "fibrotic_ild": (0.2, 0.6, 0.05, 0.15),
        }
        p_where = by_phenotype.get(phenotype, (0.5, 0.2, 0.15, 0.15))
        d["distribution"] = _pick(rng, ("diffuse", "basal", "perihilar", "dependent"), p_where)
        d["fraction"] = 0.06 + 0.2 * s
    elif name == "cardiomegaly":
        d["scale"] = 1.15 + 0.25 * s
    elif name == "atelectasis":
        d["side"] = _pick(rng, ("right", "left", "bilateral"), (0.3, 0.25, 0.45))
        d["height_mm"] = float(rng.uniform(15.0, 30.0))
        d["hu"] = float(rng.uniform(-20.0, 40.0))
    elif name == "lymphadenopathy":
        d["size_mm"] = int(rng.integers(11, 26))
    return d


@dataclass(frozen=True, eq=False)
class PatientPlan:
    """Everything drawn for one patient before rendering."""

    case_id: str
    index: int
    seed: int
    phenotype: str
    present: frozenset[str]
    details: Mapping[str, dict]
    fov: str  # full, upper, lower
    fov_share: float  # share of the slices a fragment keeps
    fov_offset: float  # 0..1: how far a fragment stops short of the top/bottom
    age: int
    sex: str
    geometry: Geometry
    noise_hu: float
    blur_vox: float
    stream_tag: int = _TAG  # entropy tag of the case streams (another generator's own)

    def with_findings(self, **flags: bool) -> PatientPlan:
        """The same patient with findings switched on (True) or off (False)."""
        unknown = sorted(set(flags) - set(FINDINGS))
        if unknown:
            raise ValueError(f"{NAME}: unknown finding(s) {unknown}; known: {list(FINDINGS)}")
        present = set(self.present)
        for name, on in flags.items():
            present.discard(name)
            if on:
                present.add(name)
        return replace(self, present=frozenset(present))


def plan_patient(
    seed: int,
    i: int,
    phenotype: str,
    fov: str = "full",
    *,
    noise_hu: Sequence[float] = DEFAULTS["noise_hu"],
    deformation_mm: float = DEFAULTS["deformation_mm"],
    stream_tag: int = _TAG,
) -> PatientPlan:
    """Draw patient ``i``'s findings, demography, transform and scanner settings (from the
    streams of :func:`case_streams` with ``stream_tag``)."""
    if phenotype not in PHENOTYPES:
        raise ValueError(f"{NAME}: phenotype must be one of {list(PHENOTYPES)}, got {phenotype!r}")
    if fov not in ("full", "upper", "lower"):
        raise ValueError(f"{NAME}: fov must be 'full', 'upper' or 'lower', got {fov!r}")
    streams = case_streams(seed, i, stream_tag)
    meta = streams["meta"]
    draws = meta.random(len(FINDINGS))
    present = frozenset(
        f for f, u, p in zip(FINDINGS, draws, FINDING_PROBABILITY[phenotype], strict=True) if u < p
    )
    mean_age, sd_age, p_male = _DEMOGRAPHY[phenotype]
    age = int(np.clip(np.rint(meta.normal(mean_age, sd_age)), 18, 95))
    sex = "M" if meta.random() < p_male else "F"
    fov_share = float(meta.uniform(0.35, 0.65))
    fov_offset = float(meta.random())
    noise = float(meta.uniform(*noise_hu))
    blur = float(meta.uniform(0.45, 0.75))
    details = {f: _finding_details(streams[f"detail_{f}"], f, phenotype) for f in FINDINGS}
    return PatientPlan(
        case_id=case_id(i),
        index=i,
        seed=seed,
        phenotype=phenotype,
        present=present,
        details=details,
        fov=fov,
        fov_share=fov_share,
        fov_offset=fov_offset,
        age=age,
        sex=sex,
        geometry=draw_geometry(streams["geometry"], deformation_mm),
        noise_hu=noise,
        blur_vox=blur,
        stream_tag=stream_tag,
    )


def case_id(i: int) -> str:
    return f"rct_{i:04d}"


def fov_slab(plan: PatientPlan, n_slices: int) -> slice:
    """Slices of the full-FOV grid that the patient's image keeps: all of them, or for a
    fragment ``fov_share`` of them at the top (upper) or bottom (lower), stopping short of
    the end by up to 10 % of the slices."""
    if plan.fov == "full":
        return slice(0, n_slices)
    m = int(np.clip(round(plan.fov_share * n_slices), 3, n_slices))
    gap = int(round(plan.fov_offset * 0.1 * n_slices))
    start = min(gap, n_slices - m) if plan.fov == "lower" else max(n_slices - m - gap, 0)
    return slice(start, start + m)
