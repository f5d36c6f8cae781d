"""Head modalities phantom: 2D axial head images of three modalities (CT, T1 MRI, FDG PET)
built from real anatomy, whose ground truth is the modality (the dataset of the thesis on
DEC/DCEC clustering of medical images, /work/shared/papers/003_3f35964316a5ac54.txt, Sec. 3.1:
128 x 128 grey-scale head images, 354 CT, 354 MRI, 283 PET, split 70:10:20, co-registered to
a common atlas and normalised in intensity).

Anatomy. The brain is the MNI152 ICBM 2009a template shipped inside nilearn (grey- and
white-matter maps from ``nilearn.datasets.load_mni152_gm_template`` /
``load_mni152_wm_template``, the brain outline from ``load_mni152_template``; package data, no
download). The template is skull-stripped, so the rest of the head is built around it once
(cached per process): a smooth intracranial envelope (the brain outline, sulci filled) and its
signed distance map. Per case the layers outside the envelope are, outward: a CSF gap, the
skull (inner table, diploe, outer table), a galea/muscle layer (thicker over the temporal
fossa), subcutaneous fat, skin and air, with per-subject, spatially varying thicknesses.
Intracranial CSF is what the GM and WM maps leave of the envelope (ventricles, sulci).

Each case is one subject: a random smooth nonlinear deformation (in-plane and through-plane)
and a small affine (in-plane rotation, scale, shift, slight tilt) model the anatomy that the
thesis's co-registration to an atlas leaves; the slice is axial at a random MNI height
``slice_mm`` drawn uniformly from ``slice_range_mm``. The tissue fractions of every pixel
(partial volume included) are sampled from the cached 3D maps, so no per-case resampling of
the template volume is needed.

Modality physics (array axes x, y: x from the subject's left to right, y posterior to
anterior, MNI/RAS orientation; stored in physical units, see "Intensities"):

* CT (Hounsfield units, int16): air -1000, skull tables ~+950..+1900 HU (lower with
  ``difficulty``), diploe ~0.35-0.5 of that,
  scalp fat ~-90, soft tissue ~+45, grey matter ~40, white matter ~30 (low GM/WM contrast),
  CSF ~5; sharp point spread and spatially correlated Gaussian noise.
* MRI (T1-weighted, arbitrary units, int16, WM ~1000 x a per-scan receiver gain): WM > GM >
  CSF, dark cortical bone, bright scalp fat and marrow (diploe); a smooth multiplicative bias
  field and Rician noise (magnitude of complex Gaussian noise).
* PET (FDG-like, SUV x 1000, int16): grey-matter uptake well above white matter, low
  uptake in CSF, faint scalp/muscle uptake, the skull invisible; low resolution (Gaussian
  PSF, FWHM 6-8 mm plus 4 mm x ``difficulty``) and Poisson counting noise.

``difficulty`` (0..1) jointly lowers the modality-distinguishing contrast (CT bone density,
MRI T1 weighting and fat brightness, PET grey/white ratio; more scalp uptake in PET) and
raises noise, PET blur, MRI bias field, per-tissue intensity jitter, deformation and the
misregistration (rotation, shift, scale, tilt), so that k-means on the normalised raw pixels
is clearly imperfect while the modality stays recognisable to a human (and to a decent
feature-learning method). At the defaults, k-means (3 clusters, n_init=10) on the normalised
pixels of the full cohort reaches a clustering accuracy of ~0.79 (NMI ~0.50; it lumps the
small high slices of all modalities together), and of ~0.6-0.8 on 20 images per modality;
k-means on ten intensity quantiles of the head per image reaches ~0.75-0.88.

Intensities. Images are stored raw, in the physical units above (no display window); the
thesis normalised every image in intensity before training;
:func:`medclust.intensity.rescale_percentiles` does that
(per-image percentile min-max to [0, 1]) and is what a study notebook should apply before
clustering. Clustering the un-normalised values is trivial (CT air is -1000).

Outputs per case: ``image`` (int16), ``mask`` (uint8, intracranial region: brain + CSF inside
the skull) and ``labelmap`` (uint8 tissue classes, :data:`LABELS`, each pixel's dominant
tissue). ``clinical.csv`` holds ``case_id``, ``modality`` (CT/MRI/PET, the ground truth),
``split`` (train/val/test, stratified by modality; the thesis states a 70:10:20 ratio, which
this follows, although its Table 3.1 counts, e.g. CT 213/35/106, do not), ``subject``, ``slice_mm`` (MNI z of the
slice centre) and the nuisance draws ``rotation_deg``, ``scale`` and ``tilt_deg``.

Generation is seeded and bit-reproducible: case ``i`` of modality ``m`` draws from its own
``np.random.SeedSequence(seed, spawn_key=(m, i))`` stream (independent of the counts), the
splits from ``SeedSequence([seed, 0x5B1, m])`` and everything is cast to integers before it is
written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from medclust.cohort import CaseData, write_cohort
from medclust_phantoms.exact import contract, inv_affine
from medclust_phantoms.params import fail, integer, merged, number, numbers

log = logging.getLogger(__name__)

NAME = "head_modalities"
MODALITIES: tuple[str, ...] = ("CT", "MRI", "PET")
SPLITS: tuple[str, ...] = ("train", "val", "test")

DEFAULTS: dict = {
    "seed": 0,
    "counts": {"CT": 354, "MRI": 354, "PET": 283},  # images per modality (thesis Table 3.1)
    "split": (0.7, 0.1, 0.2),  # train/val/test fractions, stratified by modality (Sec. 3.1)
    "size": 128,  # pixels per side (thesis: 128 x 128)
    "fov_mm": 240.0,  # field of view per side: pixel spacing = fov_mm / size (1.875 mm)
    "difficulty": 0.5,  # 0 easy .. 1 hard: contrast, noise, blur, misregistration
    "slice_range_mm": (-10.0, 60.0),  # MNI z range of the axial slices (supratentorial)
}

LABELS: dict[int, str] = {
    0: "background",
    1: "scalp",
    2: "skull",
    3: "CSF",
    4: "grey matter",
    5: "white matter",
}
MASK_LABELS = (3, 4, 5)  # intracranial: the mask

_SLICE_LIMITS = (-40.0, 75.0)  # allowed slice_range_mm (brain of the template: z -72..+80)
_MNI_CENTRE_Y = -17.0  # centre of the head in MNI y (mm)

# tissues of the rendering model, in the order of the fraction stack
_TISSUES = ("air", "skin", "fat", "muscle", "table", "diploe", "csf", "gm", "wm")
_T = {name: k for k, name in enumerate(_TISSUES)}
_LABEL_OF_TISSUE = np.array([0, 1, 1, 1, 2, 2, 3, 4, 5], np.uint8)


# --------------------------------------------------------------------------- parameters


def _counts(value) -> dict[str, int]:
    if isinstance(value, Mapping):
        if set(value) != set(MODALITIES):
            raise fail(NAME, "counts", f"must have exactly the keys {list(MODALITIES)}", value)
        items = [value[m] for m in MODALITIES]
    elif isinstance(value, Sequence | np.ndarray) and not isinstance(value, str | bytes):
        items = list(value)
    else:
        raise fail(NAME, "counts", f"must map {list(MODALITIES)} to image counts", value)
    ok = len(items) == len(MODALITIES) and all(
        not isinstance(v, bool) and isinstance(v, int | np.integer) and v >= 1 for v in items
    )
    if not ok:
        raise fail(
            NAME, "counts", f"must give an integer >= 1 for each of {list(MODALITIES)}", value
        )
    return {m: int(v) for m, v in zip(MODALITIES, items, strict=True)}


def validate_params(params: dict) -> dict:
    """Merge ``params`` into :data:`DEFAULTS` and check every value; raise ``ValueError`` (or
    ``TypeError`` for an unknown name) naming the offending parameter."""
    p = merged(NAME, DEFAULTS, params)
    out = {
        "seed": integer(NAME, p, "seed", 0),
        "counts": _counts(p["counts"]),
        "size": integer(NAME, p, "size", 32),
        "fov_mm": number(NAME, p, "fov_mm", 160.0, 320.0),
        "difficulty": number(NAME, p, "difficulty", 0.0, 1.0),
    }
    if out["size"] > 1024:
        raise fail(NAME, "size", "must be at most 1024", p["size"])
    split = numbers(NAME, p, "split", 3)
    if min(split) < 0 or abs(sum(split) - 1.0) > 1e-6:
        raise fail(
            NAME,
            "split",
            "must be 3 non-negative fractions (train, val, test) summing to 1",
            p["split"],
        )
    out["split"] = split
    lo, hi = numbers(NAME, p, "slice_range_mm", 2)
    if not _SLICE_LIMITS[0] <= lo <= hi <= _SLICE_LIMITS[1]:
        raise fail(
            NAME,
            "slice_range_mm",
            f"must be (low, high) with {_SLICE_LIMITS[0]} <= low <= high <= {_SLICE_LIMITS[1]}",
            p["slice_range_mm"],
        )
    out["slice_range_mm"] = (lo, hi)
    return out


# --------------------------------------------------------------------------- splits


def split_counts(n: int, fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> tuple[int, int, int]:
    """Images of one modality per split (train, val, test): ``n * fractions`` rounded by
    largest remainders (ties to the earlier split), so the counts always sum to ``n``."""
    raw = np.asarray(fractions, float) * n
    counts = np.floor(raw + 1e-9).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - int(counts.sum())]] += 1
    return tuple(int(c) for c in counts)


def assign_splits(
    seed: int, counts: Mapping[str, int], fractions: Sequence[float] = (0.7, 0.1, 0.2)
) -> dict[str, np.ndarray]:
    """Split name of every image of each modality: :func:`split_counts` of that modality,
    shuffled by ``seed`` (stratified by modality, as the thesis's 70:10:20 split)."""
    out = {}
    for m_idx, modality in enumerate(MODALITIES):
        n = int(counts[modality])
        names = np.repeat(np.asarray(SPLITS), split_counts(n, fractions))
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5B1, m_idx]))
        out[modality] = rng.permutation(names)
    return out


# --------------------------------------------------------------------------- head model


_SD_OFFSET, _SD_STEP = 20.0, 0.25  # uint8 code of the signed distance: (mm + 20) / 0.25


@dataclass(frozen=True)
class _HeadModel:
    """The MNI152 head on its 1 mm grid as one uint8 array (x, y, z, channel) with channels
    grey matter, white matter (0..255 = probability 0..1), intracranial envelope (0..255) and
    signed distance to the envelope (positive outside, coded ``(mm + 20) / 0.25``)."""

    maps: np.ndarray
    world_to_vox: np.ndarray  # 4x4, MNI mm -> voxel index


@lru_cache(maxsize=1)
def head_model() -> _HeadModel:
    """Load the MNI152 template and GM/WM maps bundled with nilearn (package data, no
    network; ``nilearn.datasets.load_mni152_template`` etc.) and build the intracranial
    envelope (brain outline with the sulci filled) and its signed distance map. Built once
    per process (~4 s); every case then only samples it at its pixels."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    gm_img = datasets.load_mni152_gm_template(resolution=1)
    wm_img = datasets.load_mni152_wm_template(resolution=1)
    if not (np.allclose(t1.affine, gm_img.affine) and np.allclose(t1.affine, wm_img.affine)):
        raise RuntimeError("nilearn MNI152 template and tissue maps are not on one grid")

    def u8(img) -> np.ndarray:
        data = np.asarray(img.get_fdata(dtype=np.float32))
        return np.clip(np.rint(data * 255.0), 0, 255).astype(np.uint8)

    t1_u8 = u8(t1)
    shape = t1_u8.shape
    brain = ndi.binary_fill_holes(t1_u8 > 12)
    # envelope on a 2 mm grid: the brain outline smoothed (sulci filled) and its signed
    # distance, both brought back to the 1 mm grid by linear interpolation
    shape2 = tuple(-(-n // 2) for n in shape)
    pad = [(0, 2 * s - n) for s, n in zip(shape2, shape, strict=True)]
    coarse = np.pad(brain, pad).reshape(shape2[0], 2, shape2[1], 2, shape2[2], 2).mean((1, 3, 5))
    smooth = ndi.gaussian_filter(coarse.astype(np.float32), 2.0)
    env2 = ndi.binary_fill_holes(smooth > 0.3) | (coarse > 0.5)
    sdist = ndi.distance_transform_edt(~env2, sampling=2.0) - ndi.distance_transform_edt(
        env2, sampling=2.0
    )

    def up(a: np.ndarray) -> np.ndarray:
        out = ndi.zoom(a.astype(np.float32), 2.0, order=1, grid_mode=True, mode="nearest")
        return out[: shape[0], : shape[1], : shape[2]]

    envelope = np.maximum(up(env2), brain)
    maps = np.empty((*shape, 4), np.uint8)
    maps[..., 0] = u8(gm_img)
    maps[..., 1] = u8(wm_img)
    maps[..., 2] = np.clip(np.rint(envelope * 255.0), 0, 255)
    maps[..., 3] = np.clip(np.rint((up(sdist) + _SD_OFFSET) / _SD_STEP), 0, 255)
    log.debug("head model: brain %d voxels, envelope %d", brain.sum(), (envelope > 0.5).sum())
    return _HeadModel(maps=maps, world_to_vox=inv_affine(t1.affine))


def _sample(maps: np.ndarray, vox: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of ``maps`` (x, y, z, 4 channels, uint8, C order) at voxel
    coordinates ``vox`` (3, n); points outside take the nearest border value. Returns
    (4, n) float32."""
    shape = np.asarray(maps.shape[:3])
    v = np.clip(vox, 0.0, (shape - 1.000001)[:, None])
    i0 = np.floor(v).astype(np.intp)
    f = (v - i0).astype(np.float32)
    flat = maps.reshape(-1).view(np.uint32)  # one word per voxel: 1-D gathers are fast
    strides = (shape[1] * shape[2], shape[2], 1)
    base = i0[0] * strides[0] + i0[1] * strides[1] + i0[2]
    out = np.zeros((v.shape[1], maps.shape[3]), np.float32)
    for corner in range(8):
        bits = [(corner >> a) & 1 for a in range(3)]
        weight = np.ones(v.shape[1], np.float32)
        for a in range(3):
            weight *= f[a] if bits[a] else 1.0 - f[a]
        offset = sum(b * s for b, s in zip(bits, strides, strict=True))
        out += weight[:, None] * np.take(flat, base + offset).view(np.uint8).reshape(-1, 4)
    return out.T


@lru_cache(maxsize=4)
def _pixel_grid(size: int, fov_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (mm) of the output frame, centred, arrays of shape (n, n)."""
    spacing = fov_mm / size
    c = (np.arange(size, dtype=np.float64) + 0.5) * spacing - fov_mm / 2
    x, y = np.meshgrid(c, c, indexing="ij")
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


@lru_cache(maxsize=8)
def _rbf_basis(size: int, cells: int) -> np.ndarray:
    """(size, cells + 2) Gaussian bumps on a regular grid of nodes, one node beyond each
    edge; ``B W B^T`` of white noise ``W`` is a smooth field (correlation ~ 1 / cells)."""
    x = (np.arange(size) + 0.5) / size
    nodes = (np.arange(cells + 2) - 0.5) / cells
    basis = np.exp(-0.5 * ((x[:, None] - nodes[None, :]) * cells) ** 2)
    basis.flags.writeable = False
    return basis


def _smooth_fields(rng: np.random.Generator, k: int, size: int, cells: int) -> np.ndarray:
    """``k`` independent smooth random 2D fields (k, size, size), each with zero mean and
    unit standard deviation (separable Gaussian-RBF interpolation of white noise)."""
    basis = _rbf_basis(size, cells)
    white = rng.standard_normal((k, cells + 2, cells + 2))
    fields = contract(white, basis.T)  # W B^T: (k, cells + 2, size)
    fields = np.moveaxis(contract(basis, np.moveaxis(fields, 1, 0)), 0, 1)  # B (W B^T)
    fields -= fields.mean(axis=(1, 2), keepdims=True)
    sd = fields.std(axis=(1, 2), keepdims=True)
    return fields / np.maximum(sd, 1e-9)


# --------------------------------------------------------------------------- difficulty


@dataclass(frozen=True)
class _Terms:
    """What ``difficulty`` sets."""

    rotation_deg: float  # sd of the in-plane rotation
    shift_mm: float  # sd of the in-plane shift
    scale_sd: float  # sd of the log scale
    tilt_deg: float  # sd of the out-of-plane tilt (pitch, roll)
    warp_mm: float  # sd of the smooth nonlinear displacement
    jitter: float  # relative sd of per-tissue intensity jitter
    contrast: float  # modality-distinguishing contrast multiplier
    noise: float  # noise multiplier
    bias: float  # MRI bias-field amplitude (log scale)
    pet_fwhm_extra: float  # extra PET blur (mm)

    @classmethod
    def of(cls, d: float) -> _Terms:
        return cls(
            rotation_deg=2.0 + 8.0 * d,
            shift_mm=2.0 + 8.0 * d,
            scale_sd=0.03 + 0.05 * d,
            tilt_deg=1.0 + 5.0 * d,
            warp_mm=1.0 + 4.0 * d,
            jitter=0.02 + 0.10 * d,
            contrast=1.0 - 0.6 * d,
            noise=0.5 + 2.0 * d,
            bias=0.05 + 0.35 * d,
            pet_fwhm_extra=4.0 * d,
        )


# --------------------------------------------------------------------------- one case


@dataclass(frozen=True)
class _Geometry:
    """Per-subject slice position and affine misregistration (drawn first from the anatomy
    stream, so the clinical table can be filled before any image is rendered)."""

    slice_mm: float
    theta: float  # in-plane rotation (rad)
    sx: float  # scale along x, y
    sy: float
    tx: float  # shift (mm)
    ty: float
    pitch: float  # tilt (rad)
    roll: float

    @property
    def row(self) -> dict:
        return {
            "slice_mm": round(self.slice_mm, 2),
            "rotation_deg": round(float(np.rad2deg(self.theta)), 2),
            "scale": round(float(np.sqrt(self.sx * self.sy)), 4),
            "tilt_deg": round(float(np.rad2deg(np.hypot(self.pitch, self.roll))), 2),
        }


def _draw_geometry(
    rng: np.random.Generator, terms: _Terms, slice_range_mm: tuple[float, float]
) -> _Geometry:
    slice_mm = float(rng.uniform(*slice_range_mm))
    theta = float(np.deg2rad(rng.normal(0.0, terms.rotation_deg)))
    log_s = rng.normal(0.0, terms.scale_sd)
    sx = float(np.exp(log_s + rng.normal(0.0, terms.scale_sd / 3)))
    sy = float(np.exp(log_s + rng.normal(0.0, terms.scale_sd / 3)))
    tx, ty = (float(t) for t in rng.normal(0.0, terms.shift_mm, 2))
    pitch, roll = (float(a) for a in np.deg2rad(rng.normal(0.0, terms.tilt_deg, 2)))
    return _Geometry(slice_mm, theta, sx, sy, tx, ty, pitch, roll)


def _tissue_fractions(
    rng: np.random.Generator, geom: _Geometry, size: int, fov_mm: float, terms: _Terms
) -> np.ndarray:
    """Fractions (len(_TISSUES), size, size) of each tissue in every pixel of one subject's
    axial slice (partial volume included)."""
    model = head_model()
    x, y = _pixel_grid(size, fov_mm)
    spacing = fov_mm / size

    # affine misregistration: rotation, anisotropic scale, shift, tilt (pitch, roll)
    ct, st = np.cos(geom.theta), np.sin(geom.theta)
    u = (ct * x - st * y) / geom.sx + geom.tx
    v = (st * x + ct * y) / geom.sy + geom.ty
    # tilt: rotate the slice plane about its centre
    w = np.zeros_like(u)
    cp, sp = np.cos(geom.pitch), np.sin(geom.pitch)
    v, w = cp * v - sp * w, sp * v + cp * w
    cr, sr = np.cos(geom.roll), np.sin(geom.roll)
    u, w = cr * u + sr * w, -sr * u + cr * w
    # smooth nonlinear deformation (subject anatomy left after co-registration) and smooth
    # modulations of the layer thicknesses
    cells = max(3, round(fov_mm / 40.0))
    dx, dy, dz, n_gap, n_skull, n_fat = _smooth_fields(rng, 6, size, cells)
    qx = u + terms.warp_mm * dx
    qy = v + _MNI_CENTRE_Y + terms.warp_mm * dy
    qz = w + geom.slice_mm + 0.5 * terms.warp_mm * dz

    world = np.stack([qx.ravel(), qy.ravel(), qz.ravel(), np.ones(qx.size)])
    vox = contract(model.world_to_vox[:3], world)
    gm, wm, env, sd = _sample(model.maps, vox).reshape(4, size, size)
    gm, wm, env = gm / 255.0, wm / 255.0, env / 255.0
    sd = sd * _SD_STEP - _SD_OFFSET

    brain = gm + wm
    scale = np.where(brain > env, env / np.maximum(brain, 1e-6), 1.0)
    gm, wm = gm * scale, wm * scale
    csf = np.clip(env - gm - wm, 0.0, 1.0)

    # layers outside the envelope (mm from it), thickness varying per subject and position;
    # the skull is a little thicker frontally and occipitally, the temporalis muscle thickens
    # the soft tissue over the temporal fossa on the lower slices
    gap = rng.uniform(1.0, 3.5) * np.clip(1.0 + 0.25 * n_gap, 0.3, 2.0)
    skull = rng.uniform(5.0, 8.0) * np.clip(1.0 + 0.15 * n_skull, 0.5, 1.6)
    skull = skull * (1.0 + 0.15 * np.clip(np.abs(qy - _MNI_CENTRE_Y) / 90.0, 0, 1))
    temporal = np.clip((np.abs(qx) - 40.0) / 25.0, 0, 1) * np.clip((30.0 - qz) / 30.0, 0, 1)
    temporal *= np.clip(1.0 - np.abs(qy + 10.0) / 50.0, 0, 1)
    muscle = 1.2 + rng.uniform(2.0, 6.0) * temporal
    fat = rng.uniform(2.5, 5.5) * np.clip(1.0 + 0.15 * n_fat, 0.5, 1.5)
    skin = rng.uniform(1.5, 2.5)
    edges = [gap]
    for thick in (0.3 * skull, 0.4 * skull, 0.3 * skull, muscle, fat, skin):
        edges.append(np.minimum(edges[-1] + thick, 42.0))

    def ramp(dist: np.ndarray) -> np.ndarray:  # fraction of the pixel beyond an edge
        return np.clip(dist / spacing + 0.5, 0.0, 1.0)

    beyond = [1.0 - env] + [np.minimum(ramp(sd - e), 1.0 - env) for e in edges]
    layer = [beyond[k] - beyond[k + 1] for k in range(len(edges))] + [beyond[-1]]
    gap_f, inner, diploe, outer, mus_f, fat_f, skin_f, air = layer
    f = np.zeros((len(_TISSUES), size, size), np.float32)
    f[_T["air"]] = air
    f[_T["skin"]] = skin_f
    f[_T["fat"]] = fat_f
    f[_T["muscle"]] = mus_f
    f[_T["table"]] = inner + outer
    f[_T["diploe"]] = diploe
    f[_T["csf"]] = csf + gap_f
    f[_T["gm"]] = gm
    f[_T["wm"]] = wm
    return f


def _correlated_noise(rng: np.random.Generator, shape: tuple, sigma_px: float) -> np.ndarray:
    """Gaussian noise with unit sd, smoothed over ``sigma_px`` pixels (reconstruction kernel)."""
    n = ndi.gaussian_filter(rng.standard_normal(shape), sigma_px)
    return n / max(float(n.std()), 1e-9)


def _jittered(rng: np.random.Generator, values: dict[str, float], jitter: float) -> np.ndarray:
    return np.array([values[t] * (1.0 + rng.normal(0.0, jitter)) for t in _TISSUES], np.float32)


def _render_ct(rng, f: np.ndarray, spacing: float, terms: _Terms) -> np.ndarray:
    """CT in HU: partial-volume mix of tissue HU, sharp PSF, correlated Gaussian noise."""
    c = terms.contrast
    bone = rng.uniform(1300.0, 1900.0) * (0.55 + 0.45 * c)
    gm = rng.normal(40.0, 2.0)
    wm = gm - rng.uniform(6.0, 11.0)  # low GM/WM contrast
    hu = {
        "air": -1000.0,
        "skin": 50.0,
        "fat": -90.0,
        "muscle": 45.0,
        "table": bone,
        "diploe": bone * rng.uniform(0.35, 0.5),
        "csf": 5.0,
        "gm": gm,
        "wm": wm,
    }
    values = _jittered(rng, {k: 1.0 for k in hu}, terms.jitter * 0.3)
    values = np.array([hu[t] for t in _TISSUES], np.float32) * values
    values[_T["air"]] = -1000.0
    img = contract(values, f)
    img = ndi.gaussian_filter(img, 0.6 / spacing)
    img += rng.normal(0.0, 30.0 * terms.jitter)  # calibration offset (HU)
    sd = rng.uniform(3.0, 6.0) * terms.noise
    img += sd * _correlated_noise(rng, img.shape, 0.7)
    return np.clip(np.rint(img), -1024, 3071).astype(np.int16)


def _render_mri(rng, f: np.ndarray, spacing: float, terms: _Terms) -> np.ndarray:
    """T1-weighted MRI: tissue intensities (WM ~1000 x gain), bias field, Rician noise."""
    c = terms.contrast
    wm = 1000.0
    gm = wm * (1.0 - rng.uniform(0.28, 0.38) * c)
    t1 = {
        "air": 0.0,
        "skin": wm * 0.65,
        "fat": wm * (1.0 + rng.uniform(0.2, 0.5) * c),
        "muscle": wm * 0.5,
        "table": wm * (0.25 - 0.17 * c),
        "diploe": wm * (0.6 + 0.35 * c),
        "csf": wm * (0.55 - 0.35 * c),
        "gm": gm,
        "wm": wm,
    }
    values = _jittered(rng, t1, terms.jitter)
    img = contract(values, f)
    img = ndi.gaussian_filter(img, 0.7 / spacing)
    n = img.shape[0]
    g = (np.arange(n) + 0.5) / n * 2 - 1
    gx, gy = np.meshgrid(g, g, indexing="ij")
    basis = [gx, gy, gx * gy, gx**2, gy**2]
    poly = sum(a * b for a, b in zip(rng.normal(0.0, 1.0, len(basis)), basis, strict=True))
    poly = poly / max(float(np.abs(poly).max()), 1e-6)
    img *= np.exp(terms.bias * poly)
    img *= rng.uniform(0.6, 1.6)  # receiver gain
    sd = rng.uniform(0.01, 0.02) * terms.noise * float(np.percentile(img, 99))
    real = img + rng.normal(0.0, sd, img.shape)
    imag = rng.normal(0.0, sd, img.shape)
    return np.clip(np.rint(np.hypot(real, imag)), 0, 32767).astype(np.int16)


def _render_pet(rng, f: np.ndarray, spacing: float, terms: _Terms) -> np.ndarray:
    """FDG PET (SUV x 1000): GM >> WM uptake, Gaussian PSF, Poisson counting noise."""
    c = terms.contrast
    gm = rng.uniform(7000.0, 11000.0)
    ratio = 1.0 + rng.uniform(1.8, 2.6) * c  # GM / WM
    wm = gm / ratio
    extra = rng.uniform(0.06, 0.12) + 0.25 * (1.0 - c)  # scalp/muscle uptake (x GM)
    suv = {
        "air": 0.0,
        "skin": gm * extra * 0.7,
        "fat": gm * extra * 0.3,
        "muscle": gm * extra,
        "table": gm * 0.03,
        "diploe": gm * 0.06,
        "csf": wm * 0.15,
        "gm": gm,
        "wm": wm,
    }
    values = _jittered(rng, suv, terms.jitter)
    img = contract(values, f)
    fwhm = rng.uniform(6.0, 8.0) + terms.pet_fwhm_extra
    img = ndi.gaussian_filter(img, fwhm / 2.3548 / spacing)
    counts_gm = rng.uniform(60.0, 150.0) / terms.noise  # expected counts in GM per pixel
    lam = np.clip(img, 0, None) * (counts_gm / gm)
    img = rng.poisson(lam).astype(np.float64) * (gm / counts_gm)
    img = ndi.gaussian_filter(img, 0.6)  # reconstruction post-filter
    return np.clip(np.rint(img), 0, 32767).astype(np.int16)


_RENDER = {"CT": _render_ct, "MRI": _render_mri, "PET": _render_pet}


def _case_rngs(seed: int, m_idx: int, i: int) -> list[np.random.Generator]:
    """Two independent generators (anatomy, rendering) of image ``i`` of modality ``m_idx``;
    independent of the counts."""
    seq = np.random.SeedSequence(seed, spawn_key=(m_idx, i))
    return [np.random.default_rng(s) for s in seq.spawn(2)]


def make_case(
    seed: int,
    modality: str,
    i: int,
    *,
    size: int = 128,
    fov_mm: float = 240.0,
    difficulty: float = 0.5,
    slice_range_mm: tuple[float, float] = (-10.0, 60.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, _Geometry]:
    """Image (int16), mask (uint8) and labelmap (uint8) of image ``i`` of ``modality``, and
    its geometry; what :func:`generate` writes (parameters as in :data:`DEFAULTS`)."""
    m_idx = MODALITIES.index(modality)
    terms = _Terms.of(difficulty)
    anat_rng, render_rng = _case_rngs(seed, m_idx, i)
    geom = _draw_geometry(anat_rng, terms, slice_range_mm)
    f = _tissue_fractions(anat_rng, geom, size, fov_mm, terms)
    image = _RENDER[modality](render_rng, f, fov_mm / size, terms)
    groups = np.stack([f[_LABEL_OF_TISSUE == k].sum(axis=0) for k in sorted(LABELS)])
    labelmap = np.argmax(groups, axis=0).astype(np.uint8)
    mask = ndi.binary_fill_holes(np.isin(labelmap, MASK_LABELS)).astype(np.uint8)
    return image, mask, labelmap, geom


# --------------------------------------------------------------------------- cohort


def generate(root: str | Path, **params) -> Path:
    """Write the head modalities phantom cohort to ``root`` (see the module docstring).

    A first pass draws every case's geometry (cheap) for ``clinical.csv``; the images are
    rendered lazily while :func:`medclust.cohort.write_cohort` writes them.
    """
    p = validate_params(params)
    counts, size, fov = p["counts"], p["size"], p["fov_mm"]
    terms = _Terms.of(p["difficulty"])
    spacing = (fov / size, fov / size)
    splits = assign_splits(p["seed"], counts, p["split"])
    head_model()  # load the template once up front (fails early without nilearn)

    order = [(m, i) for m in MODALITIES for i in range(counts[m])]
    rows = []
    for modality, i in order:
        anat_rng, _ = _case_rngs(p["seed"], MODALITIES.index(modality), i)
        geom = _draw_geometry(anat_rng, terms, p["slice_range_mm"])
        rows.append(
            {
                "case_id": _case_id(modality, i),
                "modality": modality,
                "split": str(splits[modality][i]),
                "subject": f"sub-{modality.lower()}{i:03d}",
                **geom.row,
            }
        )
    clinical = pd.DataFrame(rows)

    def cases() -> Iterator[CaseData]:
        for modality, i in order:
            image, mask, labelmap, _ = make_case(
                p["seed"],
                modality,
                i,
                size=size,
                fov_mm=fov,
                difficulty=p["difficulty"],
                slice_range_mm=p["slice_range_mm"],
            )
            cid = _case_id(modality, i)
            yield CaseData(id=cid, image=image, spacing=spacing, mask=mask, labelmap=labelmap)

    description = (
        "Phantom 2D axial head images of three modalities (CT in HU, T1-weighted MRI in "
        "arbitrary units, FDG PET in SUV x 1000) built from the MNI152 template and its "
        "grey/white-matter maps (nilearn), with a synthetic skull and scalp, per-subject "
        "deformation and misregistration, and modality physics (CT bone, MRI bias field and "
        "Rician noise, PET blur and Poisson noise). Ground truth: clinical.csv 'modality'. "
        "Stored raw; normalise each image to [0, 1] (medclust.intensity."
        "rescale_percentiles) before clustering, as the thesis did."
    )
    return write_cohort(
        root,
        cases(),
        clinical,
        name=NAME,
        modality="CT / MR (T1) / PET (FDG) phantom",
        description=description,
        labels=dict(LABELS),
        spacing_note=(
            f"2D axial slices, {size} x {size} pixels of {fov / size:g} x {fov / size:g} mm "
            "(x left->right, y posterior->anterior, MNI orientation)"
        ),
        mask_labels={"0": "background", "1": "intracranial (brain + CSF)"},
        clinical_label="modality",
        ground_truth="clinical.csv 'modality' (CT, MRI, PET); 'split' is train/val/test",
        intensity_note=(
            "raw physical units per modality (CT: HU; MRI: a.u.; PET: SUV x 1000); "
            "apply medclust.intensity.rescale_percentiles (per-image 0.5-99.5 "
            "percentile min-max) before clustering"
        ),
        generator_params=_describe(p),
    )


def _case_id(modality: str, i: int) -> str:
    return f"{modality.lower()}_{i:03d}"


def _describe(p: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()}
