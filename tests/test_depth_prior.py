"""Depth priors: model lookup, tiny-model inference, robust alignment, supplied depth files, fusion with stereo."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.config import DepthPriorConfig
from core.stages import depth_prior as stage
from core.stages.depth_prior import align, model, supplied
from tests.conftest import build_tiny_model

REPO = "depth-anything/Depth-Anything-V2-Small-hf"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "Depth-Anything-V2-Small-hf")


def _fake_hf_cache(hf_home: Path, model_dir: Path) -> Path:
    repo_dir = hf_home / "hub" / ("models--" + REPO.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / "0123abcd"
    shutil.copytree(model_dir, snapshot)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text("0123abcd", encoding="utf-8")
    return snapshot


def test_resolution_order(no_depth_model: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = shutil.copytree(tiny_model_dir, no_depth_model / "explicit")
    env_dir = shutil.copytree(tiny_model_dir, no_depth_model / "env")
    project = shutil.copytree(tiny_model_dir, no_depth_model / "models" / "Depth-Anything-V2-Small-hf")
    cached = _fake_hf_cache(no_depth_model / "hf_home", tiny_model_dir)
    monkeypatch.setenv(model.ENV_VAR, str(env_dir))

    config = DepthPriorConfig(model=REPO, model_path=str(explicit))
    assert model.resolve_model(config) == model.ModelLocation(explicit.resolve(), "explicit", REPO)
    config = dataclasses.replace(config, model_path=None)
    assert model.resolve_model(config).source == "env"
    assert model.resolve_model(config).path == env_dir.resolve()
    monkeypatch.delenv(model.ENV_VAR)
    location = model.resolve_model(config)
    assert (location.source, location.path) == ("project", project.resolve())
    shutil.rmtree(project)
    location = model.resolve_model(config)
    assert (location.source, location.path) == ("hf_cache", cached)
    shutil.rmtree(no_depth_model / "hf_home")
    assert model.resolve_model(config) is None


def test_not_available_says_how_to_enable(no_depth_model: Path) -> None:
    lookup = model.find_model(DepthPriorConfig(model=REPO, model_path=str(no_depth_model / "nowhere")))
    assert lookup.location is None
    assert model.ENV_VAR in lookup.message and "models" in lookup.message and "nowhere" in lookup.message


def test_tiny_model_inference_keeps_size(tiny_model_dir: Path) -> None:
    location = model.ModelLocation(tiny_model_dir, "explicit", "tiny")
    loaded = model.load_depth_model(location, device="cpu")
    assert model.load_depth_model(location, device="cpu") is loaded  # one load per process
    assert loaded.kind == "relative"
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (60, 90, 3), dtype=np.uint8), rng.integers(0, 255, (75, 50, 3), dtype=np.uint8),
              rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)]
    out = model.predict_relative_depth(loaded, images, input_size=70)
    assert [o.shape for o in out] == [(60, 90), (75, 50), (60, 90)]
    assert all(o.dtype == np.float32 and np.isfinite(o).all() for o in out)


def _scene_depth(shape: tuple[int, int] = (60, 80)) -> np.ndarray:
    """A smooth depth map between about 1 and 3 (a slanted plane with a bump)."""
    v, u = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    return 1.0 + 1.5 * u / shape[1] + 0.5 * np.exp(-((u - 40) ** 2 + (v - 30) ** 2) / 200.0)


@pytest.mark.parametrize("kind", ["relative", "metric"])
def test_alignment_recovers_scale_shift_under_outliers(kind: model.PriorKind) -> None:
    rng = np.random.default_rng(1)
    depth = _scene_depth()
    scale, shift = 0.37, 0.8
    # The prior is what the true depth looks like before the fit: inverse depth or depth, up to scale and shift.
    truth = 1.0 / depth if kind == "relative" else depth
    prior = (truth - shift) / scale
    target = depth * (1 + rng.normal(0, 0.005, depth.shape))
    outliers = rng.random(depth.shape) < 0.3
    target[outliers] = rng.uniform(0.5, 5.0, outliers.sum())
    fit = align.align_prior(prior, target, np.ones_like(target), kind)
    assert fit.ok, fit.reason
    assert fit.scale == pytest.approx(scale, rel=0.02)
    assert fit.shift == pytest.approx(shift, abs=0.02)
    assert 0.6 < fit.inlier_fraction < 0.8
    assert fit.residual < 0.01
    assert np.nanmax(np.abs(fit.apply(prior) / depth - 1)) < 0.02


def test_wrong_priors_are_rejected() -> None:
    depth = _scene_depth()
    flipped = depth.copy()  # depth where disparity is expected: near and far reversed
    fit = align.align_prior(flipped, depth, None, "relative")
    assert not fit.ok and "reversed" in fit.reason
    rng = np.random.default_rng(2)
    unrelated = cv2.GaussianBlur(rng.random(depth.shape), (0, 0), 8)
    assert not align.align_prior(unrelated, depth, None, "relative").ok
    assert not align.align_prior(unrelated, depth, None, "metric").ok
    few = np.full(depth.shape, np.nan)
    few[0, :5] = 1.0
    fit = align.align_prior(1.0 / depth, few, None, "relative")
    assert not fit.ok and "only 5" in fit.reason


def test_supplied_depth_files_are_read_and_resized(tmp_path: Path) -> None:
    depth = _scene_depth((48, 64)).astype(np.float32)
    np.save(tmp_path / "img_001.npy", depth)
    millimetres = np.round(depth * 1000).astype(np.uint16)
    millimetres[:4, :4] = 0  # no measurement
    cv2.imwrite(str(tmp_path / "img_002.png"), millimetres)
    cv2.imwrite(str(tmp_path / "img_003.png"), (depth * 50).astype(np.uint8))

    assert supplied.find_depth_file(tmp_path, "sub/img_001.JPG") == tmp_path / "img_001.npy"
    assert supplied.find_depth_file(tmp_path, "img_009.jpg") is None
    assert supplied.find_depth_file(tmp_path, "img_002.JPEG") == tmp_path / "img_002.png"
    same = supplied.read_depth_file(tmp_path / "img_001.npy")
    np.testing.assert_array_equal(same, depth)
    big = supplied.read_depth_file(tmp_path / "img_002.png", size=(128, 96))
    assert big.shape == (96, 128) and big.dtype == np.float32
    assert np.isnan(big[:6, :6]).all()
    np.testing.assert_allclose(big[20:80, 20:100], cv2.resize(depth, (128, 96))[20:80, 20:100], atol=2e-3)
    small = supplied.read_depth_file(tmp_path / "img_001.npy", size=(32, 24))
    assert small.shape == (24, 32)
    with pytest.raises(ValueError, match="16-bit"):
        supplied.read_depth_file(tmp_path / "img_003.png")
    with pytest.raises(ValueError, match="turned by 90 degrees"):
        supplied.read_depth_file(tmp_path / "img_001.npy", size=(48, 64))


# ---------------------------------------------------------------- the stage: fusion with stereo


def _one_view_scene(tmp_path: Path, copies: int = 1) -> tuple[object, object, np.ndarray]:
    """A scene with one 80x60 view of a known surface (``copies`` views named view0.jpg... when more than one):
    stereo is confident on the left half only."""
    from core.geometry import PinholeCamera, backproject_depth
    from core.photos import Photo
    from core.scene import SparseScene
    from core.stages.depth import DepthMap, DepthMapRecord, DepthMaps, save_depth_map

    truth = _scene_depth((60, 80)).astype(np.float32)
    camera = PinholeCamera(np.array([[100.0, 0, 40], [0, 100.0, 30], [0, 0, 1]]), np.eye(3), np.zeros(3), 80, 60)
    rng = np.random.default_rng(3)
    mask = np.zeros(truth.shape, bool)
    mask.flat[rng.choice(truth.size, 150, replace=False)] = True
    points = backproject_depth(truth, camera, mask)
    names = ["view.jpg"] if copies == 1 else [f"view{k}.jpg" for k in range(copies)]
    photos = [Photo(k, name, name) for k, name in enumerate(names)]
    scene = SparseScene(photos, [tmp_path / n for n in names], [camera] * copies, points,
                        np.zeros((len(points), 3), np.uint8), [np.arange(len(points))] * copies)
    stereo = np.full(truth.shape, np.nan, np.float32)
    confidence = np.zeros(truth.shape, np.float32)
    stereo[:, :40], confidence[:, :40] = truth[:, :40], 0.8  # confident stereo
    stereo[:10, 40:], confidence[:10, 40:] = truth[:10, 40:] * 1.3, 0.07  # weak and wrong
    (tmp_path / "stereo").mkdir()
    records = []
    for photo in photos:
        path = save_depth_map(DepthMap(photo, camera, stereo, confidence, np.zeros((60, 80, 3), np.uint8)),
                              tmp_path / "stereo" / f"{photo.stem}.npz")
        records.append(DepthMapRecord(photo, camera, path, [], (0.8, 3.5)))
    return scene, DepthMaps(maps=records), truth


def test_fusion_keeps_confident_stereo_and_fills_the_rest(tmp_path: Path, no_depth_model: Path) -> None:
    from core.stages.depth import load_depth_map

    scene, maps, truth = _one_view_scene(tmp_path)
    (tmp_path / "depth").mkdir()
    np.save(tmp_path / "depth" / "view.npy", ((1.0 / truth - 0.1) / 0.5).astype(np.float32))  # disparity-like
    result = stage.run_depth_prior(scene, maps, tmp_path / "prior", DepthPriorConfig(), supplied_dir=tmp_path / "depth")
    assert result.ok and result.metrics["accepted_views"] == 1
    view = load_depth_map(result.maps[0].path)
    np.testing.assert_array_equal(view.depth[:, :40], truth[:, :40])  # confident stereo untouched
    right = view.depth[:, 40:]
    assert np.isfinite(right).mean() > 0.95
    assert np.nanmax(np.abs(right / truth[:, 40:] - 1)) < 0.01  # filled and weak-wrong replaced by the prior
    stats = result.metrics["per_view"]["view.jpg"]
    assert stats["stereo_fraction"] == pytest.approx(0.5, abs=0.01)
    assert stats["prior_fraction"] == pytest.approx(0.5, abs=0.03)
    assert stats["inverse_depth"] == 1.0 and stats["residual"] < 0.01
    side = np.load(tmp_path / "prior" / "depth_prior" / "priors" / result.maps[0].path.name)
    assert set(np.unique(side["source"])) <= {1, 2} and side["prior"].shape == truth.shape
    assert any("Depth prior from 1 supplied" in f.message for f in result.findings)
    shown = stage.load_prior_view(tmp_path / "prior", scene.photos[0])  # what the Diagnostics page displays
    assert shown is not None and shown.stereo_fraction == pytest.approx(stats["stereo_fraction"])
    assert np.nanmax(np.abs(shown.prior_depth[:, 40:] / truth[:, 40:] - 1)) < 0.01
    assert stage.load_prior_view(tmp_path / "stereo", scene.photos[0]) is None  # a run without the prior stage


def test_wrong_supplied_prior_is_rejected_and_stereo_kept(tmp_path: Path, no_depth_model: Path) -> None:
    scene, maps, truth = _one_view_scene(tmp_path)
    (tmp_path / "depth").mkdir()
    unrelated = cv2.GaussianBlur(np.random.default_rng(4).random(truth.shape), (0, 0), 6) + 1.0
    np.save(tmp_path / "depth" / "view.npy", unrelated.astype(np.float32))
    result = stage.run_depth_prior(scene, maps, tmp_path / "prior", DepthPriorConfig(),
                                   supplied_dir=tmp_path / "depth")
    assert result.ok and result.metrics["accepted_views"] == 0
    assert result.maps[0].path == maps.maps[0].path
    assert any(f.level == "warning" and "rejected" in f.message for f in result.findings)


def test_no_prior_available_keeps_going(tmp_path: Path, no_depth_model: Path) -> None:
    scene, maps, _ = _one_view_scene(tmp_path)
    result = stage.run_depth_prior(scene, maps, tmp_path / "prior", DepthPriorConfig())
    assert result.ok and result.maps == maps.maps
    assert result.metrics["model_available"] == 0
    assert any("not installed" in f.message and model.ENV_VAR in f.hint and "models" in f.hint for f in result.findings)


def test_stage_runs_the_tiny_model(tmp_path: Path, no_depth_model: Path, tiny_model_dir: Path) -> None:
    scene, maps, _ = _one_view_scene(tmp_path)
    result = stage.run_depth_prior(scene, maps, tmp_path / "prior", DepthPriorConfig(model_path=str(tiny_model_dir),
                                                                                      input_size=70))
    assert result.ok and result.metrics["model_available"] == 1 and result.metrics["prior_views"] == 1
    assert "residual" in result.metrics["per_view"]["view.jpg"]  # a random model may well be rejected; it still ran


def test_one_odd_map_cannot_pick_the_other_reading(tmp_path: Path, no_depth_model: Path) -> None:
    """One source made the folder: an odd map that only fits when read as depth is rejected among disparity maps
    (on real data: an upside-down disparity map read as depth fitted a ground plane; see the benchmark)."""
    scene, maps, truth = _one_view_scene(tmp_path, copies=3)
    (tmp_path / "depth").mkdir()
    disparity = ((1.0 / truth - 0.1) / 0.5).astype(np.float32)
    np.save(tmp_path / "depth" / "view0.npy", disparity)
    np.save(tmp_path / "depth" / "view1.npy", disparity * 1.7 + 0.2)
    odd = (truth * 0.5 + 0.3).astype(np.float32)
    np.save(tmp_path / "depth" / "view2.npy", odd)
    assert align.align_prior(odd, truth, None, "metric").ok  # on its own it would be read as depth
    result = stage.run_depth_prior(scene, maps, tmp_path / "prior", DepthPriorConfig(),
                                   supplied_dir=tmp_path / "depth")
    accepted = {name: stats["accepted"] for name, stats in result.metrics["per_view"].items()}
    assert accepted == {"view0.jpg": 1.0, "view1.jpg": 1.0, "view2.jpg": 0.0}
    assert result.maps[2].path == maps.maps[2].path


def test_smooth_correction_undoes_a_low_frequency_warp() -> None:
    rng = np.random.default_rng(5)
    depth = _scene_depth((120, 160))
    low = cv2.resize(rng.normal(size=(3, 4)).astype(np.float32), (160, 120), interpolation=cv2.INTER_CUBIC)
    prior = 2.0 * (1.0 + 0.05 * low / np.abs(low).max()) / depth + 0.1  # inverse depth, warped by up to 5 %
    index = rng.choice(depth.size, 3000, replace=False)
    fit = align.align_prior(prior.ravel()[index], depth.ravel()[index], None, "relative")
    aligned = fit.apply(prior)
    warp = align.smooth_correction(aligned, index, depth.ravel()[index], np.ones(len(index)))
    assert warp is not None and warp.residual_after < 0.3 * warp.residual_before
    assert np.median(np.abs(aligned * warp.field / depth - 1)) < 0.3 * np.median(np.abs(aligned / depth - 1))


def test_metric_maps_give_the_world_scale(tmp_path: Path, no_depth_model: Path) -> None:
    scene, maps, truth = _one_view_scene(tmp_path, copies=3)  # the scene's world is in metres
    (tmp_path / "depth").mkdir()
    for k in range(3):  # phone-style 16-bit millimetre maps at a lower resolution
        small = cv2.resize(truth, (40, 30), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(tmp_path / "depth" / f"view{k}.png"), np.round(small * 1000).astype(np.uint16))
    result = stage.run_depth_prior(scene, maps, tmp_path / "prior", DepthPriorConfig(),
                                   supplied_dir=tmp_path / "depth")
    assert result.metrics["accepted_views"] == 3
    assert result.metrics["world_units_per_metre"] == pytest.approx(1.0, rel=0.02)
    assert any("read as metric" in f.message for f in result.findings)


def test_garbage_supplied_maps_are_each_skipped_with_a_finding(tmp_path: Path, no_depth_model: Path) -> None:
    """Issue 15 item 8: empty, all-zero, NaN, negative, wrongly shaped and non-array maps are each skipped with a
    finding naming the map and its photo (never an internal folder); the good map is still used, the run goes on."""
    scene, maps, truth = _one_view_scene(tmp_path, copies=7)
    folder = tmp_path / "depth"
    folder.mkdir()
    np.save(folder / "view0.npy", ((1.0 / truth - 0.1) / 0.5).astype(np.float32))
    np.save(folder / "view1.npy", np.zeros((0, 4), np.float32))
    np.save(folder / "view2.npy", np.zeros(truth.shape, np.float32))
    np.save(folder / "view3.npy", np.full(truth.shape, np.nan, np.float32))
    np.save(folder / "view4.npy", -np.ones(truth.shape, np.float32))
    np.save(folder / "view5.npy", np.ones((40, 200), np.float32))
    (folder / "view6.png").write_text("not an image at all")
    result = stage.run_depth_prior(scene, maps, tmp_path / "prior", DepthPriorConfig(), supplied_dir=folder)
    assert result.ok and result.metrics["per_view"]["view0.jpg"]["accepted"] == 1.0
    unreadable = [f.message for f in result.findings if "could not be read" in f.message]
    for k, suffix in [(1, "npy"), (2, "npy"), (3, "npy"), (4, "npy"), (5, "npy"), (6, "png")]:
        assert any(f"view{k}.jpg" in m and f"view{k}.{suffix}" in m for m in unreadable), (k, unreadable)
    assert len(unreadable) == 6
    assert not any("depth_prior/" in f.message or "supplied/" in f.message or str(tmp_path) in f.message
                   for f in result.findings)
