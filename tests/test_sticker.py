"""Single photo -> 3D cartoon sticker: the theme matcher, the cut-out against known masks, the die-cut border, the
palette, the closed solid and its GLB (Khronos validator, reloaded with its texture), bad input, the CLI, a job and
the pages. Photos are drawn with OpenCV on plain backdrops, so the subject's true mask is known."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT, build_tiny_model
from PIL import Image

from core.config import preset_config
from core.geometry import boundary_edges
from core.gltf_validator import validate_gltf, validator_available
from core.pipeline import run_sticker
from core.segmentation import mask_iou
from core.stages import sticker as stage
from core.stages.sticker import diecut, solid, stylise
from core.stages.sticker.themes import THEMES, THEMES_BY_KEY, match_theme

MIN_CUTOUT_IOU = 0.97
"""Measured on the three drawn subjects below (640 x 480 JPEG, q 92): 0.9996-1.0000 at the test and balanced
presets; 0.97 leaves room for JPEG ringing and the outline refinement, and still fails a cut-out that keeps a
backdrop strip or drops a part (the figure's head is 23 % of it)."""
MIN_OUTLINE_IOU = 0.97
"""The solid's front seen from the front against the die-cut mask: measured 0.985-0.996 (cells of 5.3 px at the test
preset, the relaxed outline cuts and adds less than half a cell)."""


def subject_photo(path: Path, kind: str = "figure", size: tuple[int, int] = (640, 480), seed: int = 0) -> np.ndarray:
    """Draw a subject on a plain, slightly noisy backdrop, save it as JPEG; returns its true mask."""
    w, h = size
    rng = np.random.default_rng(seed)
    backdrop = {"figure": (232, 234, 228), "star": (40, 44, 52), "blob": (200, 220, 240)}[kind]
    img = np.clip(np.full((h, w, 3), backdrop, np.float32) + rng.normal(0, 2.0, (h, w, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    cx, cy = w // 2, h // 2 + 30
    if kind == "figure":  # an orange body, a brown head with eyes and a mouth, a green patch
        cv2.ellipse(mask, (cx, cy), (130, 100), 0, 0, 360, 1, -1)
        cv2.ellipse(img, (cx, cy), (130, 100), 0, 0, 360, (230, 120, 40), -1)
        cv2.circle(mask, (cx, cy - 140), 75, 1, -1)
        cv2.circle(img, (cx, cy - 140), 75, (150, 90, 60), -1)
        for dx in (-28, 28):
            cv2.circle(img, (cx + dx, cy - 160), 10, (20, 20, 20), -1)
        cv2.ellipse(img, (cx, cy - 130), (25, 12), 0, 0, 180, (200, 60, 80), -1)
        cv2.rectangle(img, (cx - 40, cy - 20), (cx + 40, cy + 40), (60, 150, 70), -1)
    elif kind == "star":  # a yellow star with an orange centre on a dark cloth
        angles = np.linspace(0, 2 * np.pi, 11)[:-1] - np.pi / 2
        radii = np.where(np.arange(10) % 2 == 0, 190, 85)
        points = np.stack([w / 2 + radii * np.cos(angles), h / 2 + 10 + radii * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(mask, [points], 1)
        cv2.fillPoly(img, [points], (250, 200, 40))
        cv2.circle(img, (w // 2, h // 2 + 10), 40, (240, 120, 30), -1)
    else:  # a textured magenta blob with eyes (a plush toy) on a pale blue sweep
        cv2.ellipse(mask, (cx, h // 2), (170, 140), 20, 0, 360, 1, -1)
        texture = cv2.resize(rng.integers(0, 60, (h // 4, w // 4)).astype(np.float32), (w, h),
                             interpolation=cv2.INTER_NEAREST)[..., None]
        colour = np.clip(np.array([180, 60, 120], np.float32) + texture, 0, 255).astype(np.uint8)
        img[mask.astype(bool)] = colour[mask.astype(bool)]
        for dx in (-50, 50):
            cv2.circle(img, (cx + dx, h // 2 - 30), 14, (10, 10, 10), -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, quality=92)
    return mask.astype(bool)


@pytest.fixture
def config():
    return preset_config("test")


def make(photo: Path, run_dir: Path, config, theme: str = "kawaii and chibi") -> stage.StickerResult:
    sticker = config.sticker.__class__(**{**config.sticker.__dict__, "theme": theme})
    return stage.run_sticker(photo, run_dir, sticker, config.depth_prior, config.capture)


# --- theme matcher ----------------------------------------------------------------------------------------------

PROMPTS = [
    ("kawaii and chibi", "kawaii"), ("my fluffy puppies", "cute_animals"), ("a steaming latte", "food_drinks"),
    ("lol so happy", "emoji"), ("retro 70s vibes", "retro"), ("dragons and unicorns", "mythical"),
    ("yoga teacher", "professions_hobbies"), ("Merry Xmas", "festivals_holidays"), ("you can do it!", "motivational"),
    ("clean scandinavian lines", "minimalist"), ("burgers", "food_drinks"), ("birthday party", "festivals_holidays"),
    ("Mythical Creatures", "mythical"),
    # no keyword: the character n-gram similarity
    ("cupcakez and sprinklez", "food_drinks"), ("kittehs", "cute_animals"), ("halloweeen spooky", "festivals_holidays"),
    ("fantasie wizzard", "mythical"), ("nostalgik", "retro"),
]


@pytest.mark.parametrize(("prompt", "expected"), PROMPTS)
def test_theme_matcher_maps_free_text_to_the_expected_theme(prompt: str, expected: str) -> None:
    match = match_theme(prompt)
    assert match.theme.key == expected, (prompt, match.theme.key, match.reason)
    assert match.reason


def test_theme_matcher_says_why() -> None:
    keywords = match_theme("a chibi kawaii girl")
    assert keywords.how == "keywords" and keywords.reason == "matched the keywords 'kawaii', 'chibi'"
    similar = match_theme("kittehs")
    assert similar.how == "similarity" and similar.reason.startswith("closest by text similarity 0.")
    assert similar.score == max(similar.similarities.values())
    assert match_theme("").how == "default" and match_theme("qwerty zxcv").how == "default"
    assert len(THEMES) == 10 and all(match_theme(t.name).theme is t for t in THEMES)


# --- cut-out, die-cut, palette -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["figure", "star", "blob"])
def test_cutout_matches_the_known_mask_and_the_border_has_the_asked_width(tmp_path: Path, config, kind: str,
                                                                          no_depth_model: Path) -> None:
    truth = subject_photo(tmp_path / f"{kind}.jpg", kind)
    result = make(tmp_path / f"{kind}.jpg", tmp_path / "run", config)
    assert result.ok, result.failure
    assert mask_iou(result.cutout, truth) >= MIN_CUTOUT_IOU
    # Every pixel on the die-cut's outer outline (4-neighbours of the outside) lies the asked border width (+- 1 px)
    # from the subject.
    die, subject = result.die, result.subject
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    outline = die & (cv2.dilate((~die).astype(np.uint8), cross) > 0)
    distance = diecut.distance_outside(subject)[outline]
    border = config.sticker.border_px
    assert outline.sum() > 100
    assert distance.min() >= border - 1 and distance.max() <= border + 1
    assert not (die & ~subject & (diecut.distance_outside(subject) > border + 1)).any()


@pytest.mark.parametrize("theme", THEMES, ids=lambda t: t.key)
def test_cartoon_uses_at_most_the_themes_colours(tmp_path: Path, theme) -> None:
    truth = subject_photo(tmp_path / "p.jpg", "figure")
    image = np.asarray(Image.open(tmp_path / "p.jpg").convert("RGB"))
    cartoon = stylise.ClassicalStylizer(scale=0.5).stylise(image, truth, theme)
    colours = np.unique(cartoon[truth].reshape(-1, 3), axis=0)
    palette = {tuple(c) for c in theme.palette}
    assert len(colours) <= theme.colours
    assert {tuple(int(v) for v in c) for c in colours} <= palette
    assert len(colours) >= min(3, theme.colours)  # body, head and ink at least: the faces stay apart
    small = stylise.ClassicalStylizer(palette_size=3, scale=0.5).stylise(image, truth, theme)
    assert len(np.unique(small[truth].reshape(-1, 3), axis=0)) <= 3


def test_accents_follow_the_theme(tmp_path: Path, config, no_depth_model: Path) -> None:
    subject_photo(tmp_path / "p.jpg", "figure")
    retro = make(tmp_path / "p.jpg", tmp_path / "retro", config, "retro")
    ink = np.array(THEMES_BY_KEY["retro"].palette[0])
    inner = cv2.erode(retro.subject.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    assert (retro.cartoon[inner] == ink).all(1).mean() > 0.02  # halftone dots inside, not only outlines
    glow = make(tmp_path / "p.jpg", tmp_path / "kawaii", config, "kawaii")
    rgba = np.asarray(Image.open(tmp_path / "kawaii" / "sticker" / "sticker.png"))
    halo = ~glow.die & (diecut.distance_outside(glow.die) < 4)
    tint = rgba[halo][:, :3].astype(int)
    assert (tint[:, 0] - tint[:, 1]).mean() > 10  # pink glow just outside the border, not grey shadow


# --- 3D sticker --------------------------------------------------------------------------------------------------

def test_solid_is_closed_follows_the_outline_and_its_glb_validates_with_texture(tmp_path: Path, config,
                                                                                 no_depth_model: Path) -> None:
    import trimesh

    subject_photo(tmp_path / "p.jpg", "star")
    result = make(tmp_path / "p.jpg", tmp_path / "run", config, "food")
    body = result.solid
    assert len(boundary_edges(body.faces)) == 0
    size = result.die.shape[0]
    assert mask_iou(solid.projection_mask(body, size), result.die) >= MIN_OUTLINE_IOU
    # Front faces face +z (the relaxed outline flipped none), the back is flat at z = 0, the middle is puffed.
    v = body.vertices
    front = body.faces[:body.front_faces]
    normals = np.cross(v[front[:, 1]] - v[front[:, 0]], v[front[:, 2]] - v[front[:, 0]])
    assert (normals[:, 2] > 0).all()
    thickness, puff = config.sticker.thickness_mm / 1000, config.sticker.puff_mm / 1000
    assert v[:, 2].min() == 0.0 and v[:, 2].max() == pytest.approx(thickness + puff, rel=0.15)
    assert max(np.ptp(v[:, 0]), np.ptp(v[:, 1])) == pytest.approx(config.sticker.size_mm / 1000, rel=0.02)

    glb = tmp_path / "run" / "sticker" / "sticker.glb"
    if validator_available():
        report = validate_gltf(glb)
        assert report.errors == 0, report.summary()
    else:
        pytest.skip("the Khronos glTF validator is not installed (./studio setup)")
    mesh = trimesh.load(glb, force="mesh", process=False)
    assert isinstance(mesh.visual, trimesh.visual.TextureVisuals)
    texture = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"))
    assert texture.shape[0] == texture.shape[1] and texture.shape[0] & (texture.shape[0] - 1) == 0  # power of two
    welded = mesh.copy()
    welded.merge_vertices(merge_tex=True, merge_norm=True)
    assert len(boundary_edges(welded.faces)) == 0 and welded.is_winding_consistent and welded.volume > 0
    # The texture reads back where it was put: the star's orange centre at the front's middle.
    uv = mesh.visual.uv
    middle = np.argmin(np.hypot(mesh.vertices[:, 0], mesh.vertices[:, 1] - np.ptp(mesh.vertices[:, 1]) / 2)
                       - 10 * (mesh.vertices[:, 2] > 0))
    px = (uv[middle] * [texture.shape[1], texture.shape[0]]).astype(int)
    colour = texture[texture.shape[0] - 1 - px[1], px[0]].astype(int)  # trimesh's uv: v up
    expected = result.cartoon[size // 2, size // 2].astype(int)
    assert np.abs(colour - expected).max() <= 12, (colour, expected)


def test_depth_prior_shapes_the_puff_when_a_model_is_found(tmp_path: Path, config, no_depth_model: Path) -> None:
    model_dir = build_tiny_model(tmp_path / "tiny", head_spread=0.5)
    config = config.with_changes({"depth_prior": {"model_path": str(model_dir), "input_size": 70}})
    truth = subject_photo(tmp_path / "p.jpg", "figure")
    result = make(tmp_path / "p.jpg", tmp_path / "run", config)
    assert result.ok, result.failure
    assert result.metrics["depth_prior"] == 1.0
    assert any("Depth prior from tiny" in f.message for f in result.findings)
    assert mask_iou(result.cutout, truth) >= MIN_CUTOUT_IOU and len(boundary_edges(result.solid.faces)) == 0


def test_without_a_model_the_classical_style_runs_and_says_so(tmp_path: Path, config, no_depth_model: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "sd-model"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}", encoding="utf-8")
    monkeypatch.setenv(stylise.ENV_VAR, str(folder))
    subject_photo(tmp_path / "p.jpg", "blob")
    result = make(tmp_path / "p.jpg", tmp_path / "run", config)
    assert result.ok and result.stylizer == "classical" and result.metrics["model_stylizer"] == 0.0
    messages = " ".join(f.message for f in result.findings)
    if importlib.util.find_spec("diffusers") is not None:
        pytest.skip("diffusers is installed here; the fallback message is not shown")
    assert "needs the Python package 'diffusers'" in messages and "No depth model found" in messages
    monkeypatch.delenv(stylise.ENV_VAR)
    assert "no image-to-image model installed" in stylise.choose_stylizer(config.sticker, 1.0).message


# --- bad input, the CLI, a job, the pages -----------------------------------------------------------------------

def _plain(path: Path, size: tuple[int, int] = (640, 480)) -> Path:
    rng = np.random.default_rng(1)
    img = np.clip(np.full((size[1], size[0], 3), 225.0) + rng.normal(0, 2, (size[1], size[0], 3)), 0, 255)
    Image.fromarray(img.astype(np.uint8)).save(path, quality=92)
    return path


def _texture(path: Path) -> Path:
    rng = np.random.default_rng(2)
    blocks = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(np.kron(blocks, np.ones((8, 8, 1), np.uint8))).save(path, quality=92)
    return path


@pytest.mark.parametrize(("make_input", "expected"), [
    (lambda d: _plain(d / "empty_wall.jpg"), "empty_wall.jpg: no clear subject to cut out"),
    (lambda d: _texture(d / "carpet.jpg"), "carpet.jpg: no clear subject to cut out"),
    (lambda d: _plain(d / "thumb.jpg", (120, 90)), "thumb.jpg"),
    (lambda d: (d / "notes.jpg").write_text("not a photo") and d / "notes.jpg", "notes.jpg"),
], ids=["no-subject", "fills-the-frame", "tiny", "not-an-image"])
def test_bad_input_fails_with_a_clear_message(tmp_path: Path, config, make_input, expected: str,
                                              no_depth_model: Path) -> None:
    photo = make_input(tmp_path)
    manifest = run_sticker(photo, tmp_path / "run", config, theme="retro")
    assert manifest.status == "failed"
    reason = manifest.failure_reason
    assert expected in reason and "Internal error" not in reason and "Traceback" not in reason
    log = (tmp_path / "run" / "logs" / "run.log").read_text()
    assert "Traceback" not in log


def test_cli_makes_a_sticker_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture, no_depth_model: Path) -> None:
    from core.cli.run import main

    truth = subject_photo(tmp_path / "toy.jpg", "figure")
    out = tmp_path / "run"
    assert main([str(tmp_path / "toy.jpg"), "--out", str(out), "--preset", "preview",
                 "--sticker", "kawaii and chibi"]) == 0
    printed = capsys.readouterr().out
    assert "Theme: Kawaii and Chibi" in printed and "sticker.glb" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mode"] == "sticker" and [s["name"] for s in manifest["stages"]] == ["capture", "sticker"]
    record = json.loads((out / "sticker" / "theme.json").read_text())
    assert record["theme"] == "kawaii" and record["stylizer"] == "classical"
    png = Image.open(out / "sticker" / "sticker.png")
    assert png.mode == "RGBA" and png.size == (768, 768)
    alpha = np.asarray(png)[:, :, 3]
    assert alpha[0, 0] == 0 and alpha[384, 384] == 255  # transparent around, opaque on the sticker
    webp = Image.open(out / "sticker" / "sticker.webp")
    assert webp.format == "WEBP" and webp.size == (512, 512) and webp.mode == "RGBA"
    assert (out / "sticker" / "sticker.webp").stat().st_size <= diecut.WEBP_MAX_BYTES
    cutout = np.asarray(Image.open(out / "sticker" / "cutout.png")) > 127
    assert mask_iou(cutout, truth) >= MIN_CUTOUT_IOU
    assert main([str(tmp_path / "toy.jpg"), "--out", str(out), "--resume", "--sticker", "kawaii and chibi",
                 "--preset", "preview"]) == 0  # unchanged: both stages kept
    assert "kept capture, sticker" in capsys.readouterr().err


def test_cli_refuses_a_folder_for_a_sticker(tmp_path: Path) -> None:
    from core.cli.run import main

    (tmp_path / "photos").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "photos"), "--out", str(tmp_path / "run"), "--sticker", "retro"])
    assert exit_info.value.code == 2


@pytest.fixture
def sticker_job(studio_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A sticker job from one uploaded photo, run by the real worker code."""
    from core.jobs import intake, worker
    from core.jobs.store import Store
    from core.stages.depth_prior import model

    monkeypatch.delenv(model.ENV_VAR, raising=False)
    monkeypatch.setattr(model, "MODELS_DIR", tmp_path / "models")
    store = Store()
    subject_photo(tmp_path / "upload" / "toy.jpg", "figure")
    draft = store.new_draft_dir()
    received = intake.receive_upload(draft, "toy.jpg", (tmp_path / "upload" / "toy.jpg").read_bytes(), 0)
    job, problems = intake.submit_job(store, product_name="Toy", sku="TOY-1", preset="preview", draft_dir=draft,
                                      photos=received, mode="sticker", start=False,
                                      changes={"sticker": {"theme": "dragons"}})
    assert not problems
    assert worker.run_worker(store, job.id) == "done", store.get_job(job.id).error
    return store.get_job(job.id)


def test_a_sticker_job_runs_in_the_worker_with_its_theme(sticker_job) -> None:
    from core.jobs.store import Store
    from core.report.runs import read_manifest

    store = Store()
    manifest = read_manifest(store.run_dir(sticker_job))
    assert manifest.mode == "sticker" and manifest.run_id == sticker_job.id
    assert {"sticker.glb", "sticker.png", "sticker.webp"} <= set(manifest.artifacts)
    record = json.loads((store.run_dir(sticker_job) / manifest.artifacts["sticker.theme"].path).read_text())
    assert record["theme"] == "mythical" and record["reason"] == "matched the keyword 'dragon'"


def _app(page: str, job_id: str | None = None):
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(REPO_ROOT / "Home.py"), default_timeout=60)
    app.switch_page(page)
    if job_id:
        app.query_params["job"] = job_id
    return app.run()


def _texts(app) -> str:
    parts = [e.value for e in app.markdown] + [e.value for e in app.caption] + [e.value for e in app.info]
    return "\n".join(str(p) for p in parts)


def test_pages_show_the_sticker_its_theme_and_downloads(sticker_job) -> None:
    viewer = _app("pages/2_Viewer.py", sticker_job.id)
    assert not viewer.exception, viewer.exception
    assert len(viewer.get("plotly_chart")) == 1 and len(viewer.image) == 1
    labels = [b.proto.label for b in viewer.get("download_button")]
    assert labels == ["Download GLB (3D sticker)", "Download PNG (transparent)", "Download WebP (WhatsApp, Telegram)"]
    assert "Theme: Mythical Creatures" in _texts(viewer) and "matched the keyword 'dragon'" in _texts(viewer)
    job_page = _app("pages/1_New_capture.py", sticker_job.id)
    assert not job_page.exception and "Theme: Mythical Creatures" in _texts(job_page)


def test_new_capture_offers_the_sticker_mode_with_a_theme_picker(studio_data: Path, tmp_path: Path) -> None:
    app = _app("pages/1_New_capture.py")
    app.radio[0].set_value("sticker")
    app.run()
    assert not app.exception, app.exception
    assert app.selectbox[0].options == [t.name for t in THEMES] + ["My own words…"]
    assert "Theme used: **Kawaii and Chibi**" in _texts(app)
    app.selectbox[0].set_value("My own words…")
    app.run()
    app.text_input(key="sticker-prompt").set_value("a grumpy cat")
    app.run()
    assert "Theme used: **Cute Animals** — matched the keyword 'cat'" in _texts(app)
    assert "upload exactly one accepted photo for a sticker (0 so far)" in _texts(app)
    subject_photo(tmp_path / "toy.jpg", "figure")
    app.text_input[0].set_value("Toy")
    app.get("file_uploader")[0].set_value([("toy.jpg", (tmp_path / "toy.jpg").read_bytes(), "image/jpeg")])
    app.run()
    assert not app.exception, app.exception
    assert "To start" not in _texts(app) and not next(b for b in app.button if b.label == "Start").disabled
