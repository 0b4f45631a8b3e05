"""PatchMatch multi-view stereo: a depth and a normal per pixel (slanted windows), in the Gipuma / ACMH / ACMM family.

Per reference photo every pixel holds a plane hypothesis (depth along its ray and a camera-frame normal facing the
camera). A hypothesis is scored by bilateral-weighted NCC between the reference window and its image in each source
photo through the plane's homography (a sparse ``_SAMPLES`` x ``_SAMPLES`` pattern every ``_STRIDE`` pixels, as
Gipuma), and the mean of the best ``k`` source costs (a surface hidden in some sources still matches in the others).

The search, vectorised with torch (CPU, or CUDA when present), only over the product's pixels when a mask is given:

1. **initialisation** at half resolution from the plane sweep (``sweep.py``; random depths where it found nothing),
   normals from the sweep's depth gradient;
2. **red-black checkerboard propagation** (ACMH's adaptive checkerboard, simplified: per direction the best of the
   neighbours along a strip of the other colour) and **random refinement** (perturbed depth, perturbed normal, both;
   the perturbation halves every iteration);
3. **coarse-to-fine**: the half-resolution planes are carried to full resolution (each pixel takes its coarse pixel's
   plane, exact for flat surfaces) and refined there;
4. **geometric consistency** (ACMM): once every photo has a map, each is refined again with the forward-backward
   reprojection error through the source photos' depth maps added to each source's cost.

All randomness comes from a ``torch.Generator`` seeded per photo: the same seed gives the same maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.geometry import PinholeCamera
from core.stages.depth.sweep import BEST_K_SHARE, MIN_TEXTURE_STD, plane_sweep

_SAMPLES = 5
"""Window samples per side (Gipuma's sparse pattern: 25 samples)."""
_STRIDE = 2
"""Pixels between window samples: a 9 x 9 window read at 25 places (the cost of a 5 x 5 window)."""
_SIGMA_COLOUR = 0.1
"""Bilateral weight: grey-level difference (images in [0, 1]) at which a sample's weight falls to 1/e."""
_SIGMA_SPACE = 4.0
"""Bilateral weight: distance (pixels) at which a sample's weight falls to 1/e."""
_INVALID_COST = 2.0
"""Cost of a source that does not see the hypothesis (1 - NCC lies in [0, 2])."""
_STRIP = (1, 3, 5, 7)
"""Distances along each of the four directions from which propagation takes the best neighbour (odd: the other
colour of the checkerboard)."""
_GEO_WEIGHT = 0.2
"""ACMM: weight of the forward-backward reprojection error (pixels) added to a source's photometric cost..."""
_GEO_MAX_PX = 3.0
"""...which is clamped at this many pixels (ACMM's values)."""
_MIN_GRAZING = 0.1
"""A plane whose normal makes a smaller cosine with the viewing ray than this is seen edge-on: rejected."""
MAX_COST = 0.5
"""Depths whose best-k photometric cost is above this (mean NCC below 0.5) are stored as NaN."""


@dataclass(frozen=True)
class PatchMatchSettings:
    """How hard one photo is searched (``DepthConfig`` fills it)."""

    coarse_iterations: int = 3
    iterations: int = 2
    geometric_iterations: int = 1
    sweep_planes: int = 64
    seed: int = 0


@dataclass
class PlaneMap:
    """A photo's plane hypotheses at one resolution."""

    depth: np.ndarray
    """(H, W) float32; NaN where unknown (outside the mask, no hypothesis)."""
    normal: np.ndarray
    """(H, W, 3) float32 camera-frame unit normals facing the camera; NaN where unknown."""
    cost: np.ndarray
    """(H, W) float32 best-k photometric cost (1 - NCC); inf where unknown."""


def _torch():
    import torch

    return torch


def camera_normals(camera: PinholeCamera, depth: np.ndarray) -> np.ndarray:
    """(H, W, 3) camera-frame normals facing the camera from a depth map's gradient (box-smoothed); NaN unknown."""
    h, w = depth.shape
    valid = np.isfinite(depth).astype(np.float32)
    smooth = cv2.blur(np.nan_to_num(depth), (5, 5)) / np.maximum(cv2.blur(valid, (5, 5)), 1e-6)
    smooth[valid == 0] = np.nan
    rays = _rays(camera, h, w)
    pts = rays * smooth[..., None]
    du = np.full_like(pts, np.nan)
    dv = np.full_like(pts, np.nan)
    du[:, 1:-1] = pts[:, 2:] - pts[:, :-2]
    dv[1:-1] = pts[2:] - pts[:-2]
    n = np.cross(du, dv)
    n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12
    flip = (n * rays).sum(-1) > 0
    n[flip] *= -1
    return n.astype(np.float32)


def _rays(camera: PinholeCamera, h: int, w: int) -> np.ndarray:
    """(H, W, 3) camera-frame rays with z = 1 through the pixel centres."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    K = camera.K
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1).astype(np.float32)


class _Level:
    """One reference photo at one resolution: its active pixels, reference windows and the source geometry."""

    def __init__(self, ref: np.ndarray, ref_cam: PinholeCamera, srcs: list[np.ndarray], src_cams: list[PinholeCamera],
                 active: np.ndarray, device: str) -> None:
        torch = _torch()
        F = torch.nn.functional
        self.torch, self.dev = torch, torch.device(device)
        self.h, self.w = ref.shape
        self.cam = ref_cam
        rows, cols = np.nonzero(active)
        self.n = len(rows)
        self.flat = torch.from_numpy(rows * self.w + cols).to(self.dev)
        rays = _rays(ref_cam, self.h, self.w)[rows, cols]
        self.rays = torch.from_numpy(rays).to(self.dev)
        self.uv = torch.from_numpy(np.stack([cols + 0.5, rows + 0.5], 1).astype(np.float32)).to(self.dev)
        half = _SAMPLES // 2
        offs = np.arange(-half, half + 1, dtype=np.float32) * _STRIDE
        ov, ou = np.meshgrid(offs, offs, indexing="ij")
        self.ou = torch.from_numpy(ou.reshape(-1)).to(self.dev)
        self.ov = torch.from_numpy(ov.reshape(-1)).to(self.dev)
        self.centre = (_SAMPLES * _SAMPLES) // 2
        # Reference windows (integer offsets: exact pixel values, border-clamped) and their bilateral weights.
        ref_t = torch.from_numpy(ref.astype(np.float32)).to(self.dev)[None, None]
        patch = self._sample(ref_t, self.uv[:, 0:1] + self.ou, self.uv[:, 1:2] + self.ov, self.w, self.h)
        weight = torch.exp(-(patch - patch[:, self.centre:self.centre + 1]).abs() / _SIGMA_COLOUR
                           - torch.sqrt(self.ou**2 + self.ov**2) / _SIGMA_SPACE)
        weight = weight / weight.sum(1, keepdim=True)
        centred = patch - (weight * patch).sum(1, keepdim=True)
        self.std_ref = torch.sqrt((weight * centred**2).sum(1))
        self.weight = weight
        self.weighted_centred = weight * centred / self.std_ref.clamp_min(MIN_TEXTURE_STD)[:, None]
        # Sources: cam_from_ref rotation/translation and intrinsics.
        self.srcs = [torch.from_numpy(s.astype(np.float32)).to(self.dev)[None, None] for s in srcs]
        self.src_cams = src_cams
        R_rel = [c.R @ ref_cam.R.T for c in src_cams]
        self.R_rel = torch.tensor(np.array(R_rel), dtype=torch.float32, device=self.dev)
        self.t_rel = torch.tensor(np.array([c.t - R @ ref_cam.t for c, R in zip(src_cams, R_rel, strict=True)]),
                                  dtype=torch.float32, device=self.dev)
        self.K_src = torch.tensor(np.array([[c.K[0, 0], c.K[1, 1], c.K[0, 2], c.K[1, 2]] for c in src_cams]),
                                  dtype=torch.float32, device=self.dev)
        self.size_src = [(c.width, c.height) for c in src_cams]
        self.f_ref = (float(ref_cam.K[0, 0]), float(ref_cam.K[1, 1]))
        self.src_depths: list | None = None
        # Checkerboard colours and, per colour, the propagation neighbours (active indices, -1 = none).
        lookup = np.full(self.h * self.w, -1, np.int64)
        lookup[rows * self.w + cols] = np.arange(self.n)
        self.colours, self.strips = [], []
        for colour in (0, 1):
            sel = np.flatnonzero((rows + cols) % 2 == colour)
            r, c = rows[sel], cols[sel]
            strips = []
            for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                rr = r[:, None] + dr * np.array(_STRIP)
                cc = c[:, None] + dc * np.array(_STRIP)
                inside = (rr >= 0) & (rr < self.h) & (cc >= 0) & (cc < self.w)
                idx = np.where(inside, lookup[np.clip(rr, 0, self.h - 1) * self.w + np.clip(cc, 0, self.w - 1)], -1)
                strips.append(torch.from_numpy(idx).to(self.dev))
            self.colours.append(torch.from_numpy(sel).to(self.dev))
            self.strips.append(strips)
        del F

    def _sample(self, image, u, v, w: int, h: int):
        """Bilinear samples of a (1, 1, H, W) image at continuous coordinates u, v of shape (M, P) -> (M, P)."""
        grid = self.torch.stack([2 * u / w - 1, 2 * v / h - 1], dim=-1)[None]
        out = self.torch.nn.functional.grid_sample(image, grid, mode="bilinear", padding_mode="border",
                                                   align_corners=False)
        return out[0, 0]

    def set_source_depths(self, depths: list[np.ndarray]) -> None:
        """Source depth maps (at the sources' resolution; NaN unknown) for the geometric term."""
        torch = self.torch
        self.src_depths = [torch.from_numpy(np.nan_to_num(d, nan=0.0).astype(np.float32)).to(self.dev).reshape(-1)
                           for d in depths]

    def costs(self, sel, depth, normal, k: int):
        """Best-k mean of the per-source costs of plane hypotheses at active pixels ``sel``: (total, photometric).

        total adds the geometric term when source depth maps are set; photometric is the NCC cost alone.
        """
        torch = self.torch
        rays = self.rays[sel]
        X = depth[:, None] * rays
        rho = (normal * X).sum(1)
        facing = (normal * rays).sum(1) / rays.norm(dim=1)
        # Homography of the plane n.Y = rho: Y_src = (R_rel + t_rel n^T / rho) Y_ref.
        A = self.R_rel[None] + self.t_rel[None, :, :, None] * (normal / rho[:, None])[:, None, None, :]
        base = (A @ rays[:, None, :, None])[..., 0]  # (M, S, 3) the window centre
        Y = (base[..., None] + A[..., 0:1] * (self.ou / self.f_ref[0])
             + A[..., 1:2] * (self.ov / self.f_ref[1]))  # (M, S, 3, P)
        z = Y[:, :, 2]
        zs = torch.where(z.abs() < 1e-9, torch.full_like(z, 1e-9), z)
        fx, fy, cx, cy = (self.K_src[:, i][None, :, None] for i in range(4))
        us = fx * Y[:, :, 0] / zs + cx
        vs = fy * Y[:, :, 1] / zs + cy
        weight, weighted_centred = self.weight[sel], self.weighted_centred[sel]
        photo = []
        for s, src in enumerate(self.srcs):
            w, h = self.size_src[s]
            samples = self._sample(src, us[:, s], vs[:, s], w, h)  # (M, P)
            mean = (weight * samples).sum(1)
            var = ((weight * samples * samples).sum(1) - mean * mean).clamp_min(0)
            ncc = (weighted_centred * samples).sum(1) / (var.sqrt() + 1e-4)
            cost = (1 - ncc).clamp(0, _INVALID_COST)
            c_u, c_v, c_z = us[:, s, self.centre], vs[:, s, self.centre], z[:, s, self.centre]
            seen = (c_z > 0) & (c_u >= 0) & (c_u < w) & (c_v >= 0) & (c_v < h) & (z[:, s].min(1).values > 0)
            photo.append(torch.where(seen, cost, torch.full_like(cost, _INVALID_COST)))
        photo_t = torch.stack(photo, 1)  # (M, S)
        bad = (facing > -_MIN_GRAZING) | ~(depth > 0) | ~torch.isfinite(depth)
        photo_best = torch.topk(photo_t, k, dim=1, largest=False).values.mean(1)
        if self.src_depths is None:
            total = photo_best
        else:
            geo = torch.stack([self._reprojection(s, us[:, s, self.centre], vs[:, s, self.centre], sel)
                               for s in range(len(self.srcs))], 1)
            total = torch.topk(photo_t + _GEO_WEIGHT * geo, k, dim=1, largest=False).values.mean(1)
        inf = torch.full_like(total, float("inf"))
        return torch.where(bad, inf, total), torch.where(bad, inf, photo_best)

    def _reprojection(self, s: int, us, vs, sel):
        """Forward-backward reprojection error (pixels, clamped) through source ``s``'s depth map."""
        torch = self.torch
        w, h = self.size_src[s]
        col = us.floor().long()
        row = vs.floor().long()
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        d = self.src_depths[s][(row.clamp(0, h - 1) * w + col.clamp(0, w - 1))]
        fx, fy, cx, cy = self.K_src[s]
        Ys = torch.stack([(col + 0.5 - cx) / fx * d, (row + 0.5 - cy) / fy * d, d], 1)
        Yr = (Ys - self.t_rel[s]) @ self.R_rel[s]  # R_rel^T (Ys - t)
        zr = Yr[:, 2].clamp_min(1e-9)
        pu = self.f_ref[0] * Yr[:, 0] / zr + float(self.cam.K[0, 2])
        pv = self.f_ref[1] * Yr[:, 1] / zr + float(self.cam.K[1, 2])
        err = torch.hypot(pu - self.uv[sel, 0], pv - self.uv[sel, 1])
        ok = inside & (d > 0) & (Yr[:, 2] > 0)
        return torch.where(ok, err.clamp_max(_GEO_MAX_PX), torch.full_like(err, _GEO_MAX_PX))


class _Search:
    """The plane state of one level and the propagation / refinement that improves it."""

    def __init__(self, level: _Level, depth, normal, depth_range: tuple[float, float], k: int, generator) -> None:
        self.level, self.k, self.gen = level, k, generator
        self.torch = level.torch
        self.inv_range = (1.0 / depth_range[1], 1.0 / depth_range[0])
        self.depth, self.normal = depth, normal
        everything = self.torch.arange(level.n, device=level.dev)
        self.cost, self.photo = level.costs(everything, depth, normal, k)

    def _random(self, shape):
        return self.torch.rand(shape, generator=self.gen, device="cpu").to(self.level.dev)

    def _random_normals(self, rays):
        torch = self.torch
        n = torch.randn((len(rays), 3), generator=self.gen, device="cpu").to(self.level.dev)
        n = n / n.norm(dim=1, keepdim=True).clamp_min(1e-9)
        return torch.where(((n * rays).sum(1) > 0)[:, None], -n, n)

    def _facing(self, n, rays, fallback):
        """``n`` normalised where it faces the camera, else ``fallback``."""
        n = n / n.norm(dim=1, keepdim=True).clamp_min(1e-9)
        cos = (n * rays).sum(1) / rays.norm(dim=1)
        return self.torch.where((cos < -_MIN_GRAZING)[:, None], n, fallback)

    def _clamp_depth(self, d):
        low, high = 1.0 / self.inv_range[1], 1.0 / self.inv_range[0]
        return self.torch.nan_to_num(d, nan=high).clamp(low * 0.5, high * 2.0)

    def iterate(self, iterations: int, perturbation: float, random_candidate: bool) -> None:
        torch = self.torch
        lv = self.level
        span = self.inv_range[1] - self.inv_range[0]
        for _ in range(iterations):
            for colour in (0, 1):
                sel = lv.colours[colour]
                if len(sel) == 0:
                    continue
                rays = lv.rays[sel]
                best_d, best_n = self.depth[sel].clone(), self.normal[sel].clone()
                best_c, best_p = self.cost[sel].clone(), self.photo[sel].clone()

                def consider(d, n, best_d=best_d, best_n=best_n, best_c=best_c, best_p=best_p, sel=sel):
                    c, p = lv.costs(sel, d, n, self.k)
                    better = c < best_c
                    best_d.copy_(torch.where(better, d, best_d))
                    best_n.copy_(torch.where(better[:, None], n, best_n))
                    best_c.copy_(torch.where(better, c, best_c))
                    best_p.copy_(torch.where(better, p, best_p))

                # Propagation: per direction the best-cost neighbour's plane, intersected with this pixel's ray.
                for strip in lv.strips[colour]:
                    neighbour_cost = torch.where(strip >= 0, self.cost[strip.clamp_min(0)],
                                                 torch.full(strip.shape, float("inf"), device=lv.dev))
                    pick = neighbour_cost.argmin(1)
                    q = strip[torch.arange(len(sel), device=lv.dev), pick]
                    has = (q >= 0) & torch.isfinite(neighbour_cost.min(1).values)
                    q = q.clamp_min(0)
                    nq = self.normal[q]
                    rho = self.depth[q] * (nq * lv.rays[q]).sum(1)
                    denom = (nq * rays).sum(1)
                    d = torch.where(has & (denom < -1e-6), rho / torch.where(denom < -1e-6, denom, -1.0),
                                    best_d)
                    consider(self._clamp_depth(d), torch.where(has[:, None], nq, best_n))
                # Refinement: perturbed depth, perturbed normal, both (and a random plane early on).
                inv = 1.0 / best_d
                d_pert = self._clamp_depth(1.0 / (inv + (2 * self._random(len(sel)) - 1) * perturbation * span)
                                           .clamp_min(1e-9))
                n_pert = self._facing(best_n + perturbation * 4 * (2 * self._random((len(sel), 3)) - 1), rays,
                                      best_n)
                consider(d_pert, best_n.clone())
                consider(best_d.clone(), n_pert)
                consider(d_pert, n_pert)
                if random_candidate:
                    d_rand = 1.0 / (self.inv_range[0] + self._random(len(sel)) * span)
                    consider(d_rand, self._random_normals(rays))
                self.depth[sel], self.normal[sel] = best_d, best_n
                self.cost[sel], self.photo[sel] = best_c, best_p
            perturbation *= 0.5

    def to_map(self) -> PlaneMap:
        lv = self.level
        depth = np.full(lv.h * lv.w, np.nan, np.float32)
        normal = np.full((lv.h * lv.w, 3), np.nan, np.float32)
        cost = np.full(lv.h * lv.w, np.inf, np.float32)
        flat = lv.flat.cpu().numpy()
        depth[flat] = self.depth.cpu().numpy()
        normal[flat] = self.normal.cpu().numpy()
        cost[flat] = self.photo.cpu().numpy()
        return PlaneMap(depth.reshape(lv.h, lv.w), normal.reshape(lv.h, lv.w, 3), cost.reshape(lv.h, lv.w))


def _downscale(image: np.ndarray, camera: PinholeCamera, factor: float) -> tuple[np.ndarray, PinholeCamera]:
    cam = camera.scaled(factor)
    return cv2.resize(image, (cam.width, cam.height), interpolation=cv2.INTER_AREA), cam


def _generator(seed: int):
    gen = _torch().Generator(device="cpu")
    gen.manual_seed(int(seed))
    return gen


def patchmatch_photometric(ref: np.ndarray, ref_cam: PinholeCamera, srcs: list[np.ndarray],
                           src_cams: list[PinholeCamera], depth_range: tuple[float, float], active: np.ndarray,
                           settings: PatchMatchSettings, device: str = "cpu", seed: int = 0) -> PlaneMap:
    """Photometric PatchMatch for one reference photo: sweep-initialised at half resolution, refined at full.

    ``active`` (H, W) bool: the pixels to estimate (the dilated product mask, or everything).
    """
    torch = _torch()
    gen = _generator(seed)
    k = max(1, round(BEST_K_SHARE * len(srcs)))
    with torch.no_grad():
        # Coarse level: half resolution, initialised from the plane sweep there.
        ref_c, cam_c = _downscale(ref, ref_cam, 0.5)
        scaled = [_downscale(s, c, 0.5) for s, c in zip(srcs, src_cams, strict=True)]
        srcs_c, cams_c = [s for s, _ in scaled], [c for _, c in scaled]
        active_c = cv2.resize(active.astype(np.uint8), (cam_c.width, cam_c.height),
                              interpolation=cv2.INTER_NEAREST).astype(bool)
        sweep_device = device if device != "cpu" else None
        init, _ = plane_sweep(ref_c, cam_c, srcs_c, cams_c, depth_range, settings.sweep_planes, sweep_device)
        normals = camera_normals(cam_c, init)
        level = _Level(ref_c, cam_c, srcs_c, cams_c, active_c, device)
        coarse = _start(level, init, normals, depth_range, gen)
        search = _Search(level, *coarse, depth_range, k, gen)
        search.iterate(settings.coarse_iterations, 1.0 / max(settings.sweep_planes, 1), random_candidate=True)
        coarse_map = search.to_map()
        # Fine level: every pixel takes its coarse pixel's plane.
        level = _Level(ref, ref_cam, srcs, src_cams, active, device)
        depth, normal = _carry_planes(coarse_map, cam_c, level)
        search = _Search(level, depth, normal, depth_range, k, gen)
        search.iterate(settings.iterations, 0.5 / max(settings.sweep_planes, 1), random_candidate=False)
        return search.to_map()


def patchmatch_geometric(plane_map: PlaneMap, ref: np.ndarray, ref_cam: PinholeCamera, srcs: list[np.ndarray],
                         src_cams: list[PinholeCamera], src_depths: list[np.ndarray],
                         depth_range: tuple[float, float], settings: PatchMatchSettings, device: str = "cpu",
                         seed: int = 0) -> PlaneMap:
    """ACMM's geometric pass: refine ``plane_map`` with the reprojection error through the sources' depth maps."""
    torch = _torch()
    active = np.isfinite(plane_map.depth)
    if settings.geometric_iterations <= 0 or not active.any():
        return plane_map
    gen = _generator(seed + 7919)
    k = max(1, round(BEST_K_SHARE * len(srcs)))
    with torch.no_grad():
        level = _Level(ref, ref_cam, srcs, src_cams, active, device)
        level.set_source_depths(src_depths)
        flat = level.flat.cpu().numpy()
        depth = torch.from_numpy(plane_map.depth.reshape(-1)[flat].copy()).to(level.dev)
        normal = torch.from_numpy(plane_map.normal.reshape(-1, 3)[flat].copy()).to(level.dev)
        search = _Search(level, depth, normal, depth_range, k, gen)
        search.iterate(settings.geometric_iterations, 0.25 / max(settings.sweep_planes, 1), random_candidate=False)
        return search.to_map()


def _start(level: _Level, depth: np.ndarray, normals: np.ndarray, depth_range: tuple[float, float], gen):
    """Initial depth and normal tensors at the level's active pixels: the sweep's, random where it has none."""
    torch = level.torch
    flat = level.flat.cpu().numpy()
    d = torch.from_numpy(depth.reshape(-1)[flat].copy()).to(level.dev)
    n = torch.from_numpy(normals.reshape(-1, 3)[flat].copy()).to(level.dev)
    rays = level.rays
    fronto = -rays / rays.norm(dim=1, keepdim=True)
    n = torch.where(torch.isfinite(n).all(1, keepdim=True), n, fronto)
    inv_near, inv_far = 1.0 / depth_range[0], 1.0 / depth_range[1]
    rand = torch.rand(level.n, generator=gen).to(level.dev)
    d = torch.where(torch.isfinite(d), d, 1.0 / (inv_far + rand * (inv_near - inv_far)))
    return d, n


def _carry_planes(coarse: PlaneMap, coarse_cam: PinholeCamera, level: _Level):
    """Full-resolution depth and normal at the level's pixels from the coarse pixel under each (its plane)."""
    torch = level.torch
    uv = level.uv.cpu().numpy()
    sx = coarse_cam.width / level.w
    sy = coarse_cam.height / level.h
    col = np.clip(np.floor(uv[:, 0] * sx).astype(np.int64), 0, coarse_cam.width - 1)
    row = np.clip(np.floor(uv[:, 1] * sy).astype(np.int64), 0, coarse_cam.height - 1)
    d_c = coarse.depth[row, col]
    n_c = coarse.normal[row, col]
    rays_c = _rays(coarse_cam, coarse_cam.height, coarse_cam.width)[row, col]
    rho = d_c * (n_c * rays_c).sum(1)
    rays = level.rays.cpu().numpy()
    denom = (n_c * rays).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(denom < -1e-6, rho / denom, d_c)
    fronto = -rays / np.linalg.norm(rays, axis=1, keepdims=True)
    known = np.isfinite(d) & np.isfinite(n_c).all(1)
    d = np.where(known, d, np.nanmedian(coarse.depth) if np.isfinite(coarse.depth).any() else 1.0)
    n = np.where(known[:, None], n_c, fronto)
    return (torch.from_numpy(d.astype(np.float32)).to(level.dev),
            torch.from_numpy(n.astype(np.float32)).to(level.dev))


def textured(grey: np.ndarray) -> np.ndarray:
    """Pixels whose 7 x 7 neighbourhood has a grey-level std above the sweep's ``MIN_TEXTURE_STD`` (matchable)."""
    mean = cv2.boxFilter(grey, -1, (7, 7), borderType=cv2.BORDER_REFLECT)
    sq = cv2.boxFilter(grey * grey, -1, (7, 7), borderType=cv2.BORDER_REFLECT)
    return np.sqrt(np.maximum(sq - mean * mean, 0)) > MIN_TEXTURE_STD


MIN_DETAIL_RMS = 0.004
"""``detailed``: a window holds fine detail when its high-pass RMS exceeds this (images in [0, 1])... Measured on
the balanced renders at 640 px, share of the product's pixels above it: plain bottle turntable 0.08, plain box
turntable 0.10 (their edges and rims), soup-can turntable 0.90, FUZE turntable 0.84 (labels); render noise is
0.0017."""
DETAIL_NOISE_FACTOR = 2.5
"""...or this many times the photo's noise floor (the 5th percentile of the windows' RMS), for grainier photos."""
DETAIL_SIGMA = 1.0
"""The high-pass is the grey image minus its Gaussian blur of this sigma (pixels): print, edges and relief pass,
shading ramps and soft highlights do not."""


def detailed(grey: np.ndarray) -> np.ndarray:
    """Pixels whose matching window (9 x 9) holds fine detail, not just shading.

    On a turntable the lights stand with the camera while the product turns, so shading and highlights stay put in
    the frame: stereo matches them as a surface that turns with the camera (near the turntable's axis, deep inside
    the product; plain bottle: 47 % of the fused points over 1.1 mm inside). Only detail that turns with the
    product (print, edges, relief) locates its surface there.
    """
    high = grey - cv2.GaussianBlur(grey, (0, 0), DETAIL_SIGMA)
    rms = np.sqrt(np.maximum(cv2.boxFilter(high * high, -1, (2 * _SAMPLES - 1,) * 2, borderType=cv2.BORDER_REFLECT),
                             0))
    floor = float(np.quantile(rms, 0.05))
    return rms > max(MIN_DETAIL_RMS, DETAIL_NOISE_FACTOR * floor)


def finish(plane_map: PlaneMap, textured: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(depth with NaN, normal with NaN, confidence) of a photo: good, textured matches only."""
    good = np.isfinite(plane_map.depth) & (plane_map.cost < MAX_COST) & textured
    depth = np.where(good, plane_map.depth, np.nan).astype(np.float32)
    normal = np.where(good[..., None], plane_map.normal, np.nan).astype(np.float32)
    confidence = np.where(good, np.clip(1.0 - plane_map.cost, 0, 1), 0).astype(np.float32)
    return depth, normal, confidence
