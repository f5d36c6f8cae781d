"""The head of the head modalities phantom: the tissue template (:func:`head_model`), smooth
random fields, each subject's slice position and misregistration and the tissue fractions of
its pixels (:func:`_tissue_fractions`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

from medclust_phantoms.exact import contract, inv_affine
from medclust_phantoms.head_modalities.design import (
    _MNI_CENTRE_Y,
    _T,
    _TISSUES,
    _Terms,
)

log = logging.getLogger(__name__)


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
