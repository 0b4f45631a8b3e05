"""The command line: help, exit codes, the reason on stderr and the manifest written even when the run fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_help_documents_every_option() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("--out", "--preset", "--depth-prior-dir", "--depth-model", "--no-depth-prior", "--allow-download",
                   "--seed", "--target-faces", "--hull", "--no-hull", "--height-mm", "--width-mm", "--depth-mm",
                   "--known-distance",
                   "--verbose", "preview", "balanced", "full", "Exit status"):
        assert option in result.stdout, option


def test_a_known_dimension_goes_to_the_asset_section_and_must_be_positive(tmp_path: Path) -> None:
    from core.cli.run import build_parser, config_from_args

    config = config_from_args(build_parser().parse_args([str(tmp_path), "--out", str(tmp_path / "r"),
                                                         "--height-mm", "213"]))
    assert config.asset.height_mm == 213.0 and config.asset.width_mm is None
    result = run_cli(str(tmp_path), "--out", str(tmp_path / "run"), "--height-mm", "-5")
    assert result.returncode == 2 and "not a positive length in millimetres" in result.stderr


def test_a_known_distance_goes_to_the_asset_section_in_its_one_form_and_bad_syntax_is_refused(tmp_path: Path) -> None:
    from core.cli.run import build_parser, config_from_args
    from core.known_distance import parse_known_distance

    args = build_parser().parse_args([str(tmp_path), "--out", str(tmp_path / "r"),
                                      "--known-distance", " My photo: 2.jpg:812.0,640:1490.25,655:85 "])
    config = config_from_args(args)
    assert config.asset.known_distance == "My photo: 2.jpg:812,640:1490.25,655:85"  # a colon in the name is fine
    known = parse_known_distance(config.asset.known_distance)
    assert (known.photo, known.first, known.second, known.mm) == ("My photo: 2.jpg", (812, 640), (1490.25, 655), 85)
    for bad, says in (("IMG_1.jpg:812,640:85", "is not PHOTO:X1,Y1:X2,Y2:MM"),
                      ("IMG_1.jpg:812;640:1490,655:85", "the first point '812;640' is not X,Y in pixels"),
                      ("IMG_1.jpg:812,640:1490,655:0", "'0' is not a positive distance in millimetres"),
                      ("IMG_1.jpg:-3,640:1490,655:85", "must be two pixel positions of 0 or more")):
        result = run_cli(str(tmp_path), "--out", str(tmp_path / "run"), "--known-distance", bad)
        assert result.returncode == 2 and says in result.stderr, (bad, result.stderr)
        assert "Traceback" not in result.stderr
    result = run_cli(str(tmp_path), "--out", str(tmp_path / "run"), "--height-mm", "213",
                     "--known-distance", "a.jpg:1,1:100,1:50")
    assert result.returncode == 2 and "--known-distance and --height-mm both set the real size" in result.stderr


def test_the_hull_is_automatic_unless_forced_and_old_records_keep_their_choice(tmp_path: Path) -> None:
    from core.cli.run import build_parser, config_from_args
    from core.config import PipelineConfig

    def silhouettes(*extra: str) -> str:
        args = build_parser().parse_args([str(tmp_path), "--out", str(tmp_path / "r"), *extra])
        return config_from_args(args).fusion.silhouettes

    assert (silhouettes(), silhouettes("--hull"), silhouettes("--no-hull")) == ("auto", "on", "off")
    result = run_cli(str(tmp_path), "--out", str(tmp_path / "run"), "--hull", "--no-hull")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr
    # A record from before the automatic hull held a bool: its run resumes with the choice it made.
    assert PipelineConfig.from_dict({"fusion": {"silhouettes": False}}).fusion.silhouettes == "off"
    assert PipelineConfig.from_dict({"fusion": {"silhouettes": True}}).fusion.silhouettes == "on"


def test_a_folder_without_usable_photos_fails_with_a_reason_and_a_manifest(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "readme.txt").write_text("not a photo")
    (photos / "empty.jpg").write_bytes(b"")
    run_dir = tmp_path / "run"
    result = run_cli(str(photos), "--out", str(run_dir), "--preset", "preview")
    assert result.returncode == 1
    assert "error: Only 0 of 2 photos can be used; at least 3 are needed" in result.stderr
    assert "rejected: readme.txt: is not an image" in result.stderr
    assert "Traceback" not in result.stderr
    manifest = load_manifest(run_dir)
    assert manifest.status == "failed"
    assert manifest.stages[0].name == "capture" and manifest.stages[0].status == "failed"
    assert {p.name: p.status for p in manifest.photos} == {"empty.jpg": "rejected", "readme.txt": "rejected"}
    assert (run_dir / "logs" / "run.log").exists()


def test_colmap_log_lines_go_to_the_run_log_not_the_terminal(tmp_path: Path) -> None:
    """Issue 15 minor: no raw glog lines ('I1203 ...', 'E1203 ...') between the CLI's own progress and findings
    (three unrelated pictures: COLMAP extracts, matches and fails to place them, logging an ERROR)."""
    import re

    from conftest import write_photos

    write_photos(tmp_path / "photos", count=3, seed=0)
    run_dir = tmp_path / "run"
    result = run_cli(str(tmp_path / "photos"), "--out", str(run_dir), "--preset", "preview")
    assert result.returncode == 1 and "error: COLMAP could not place the cameras" in result.stderr
    assert "Placing cameras (structure from motion)" in result.stderr  # our own progress lines stay
    glog_line = re.compile(r"^[IWEF]\d{4,8} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]", re.MULTILINE)
    assert not glog_line.search(result.stderr + result.stdout), result.stderr
    colmap_logs = list((run_dir / "logs").glob("colmap.*"))
    assert colmap_logs and "Failed to create any sparse model" in colmap_logs[0].read_text()


def test_missing_input_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli(str(tmp_path / "nope"), "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "does not exist" in result.stderr


def run_here(capsys: pytest.CaptureFixture, *args: str) -> subprocess.CompletedProcess:
    """The command line in this process (the libraries are imported once): exit status and stderr as run_cli's."""
    import logging

    from core.cli.run import main

    handlers = list(logging.getLogger().handlers)
    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    finally:
        for handler in set(logging.getLogger().handlers) - set(handlers):
            logging.getLogger().removeHandler(handler)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def test_an_existing_run_folder_needs_resume_or_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Issue 15: a second run into the same --out must never silently reuse the first run's photos."""
    from conftest import write_photos

    from core.artifacts import file_sha256

    photos = tmp_path / "photos"
    write_photos(photos, count=3, seed=0)  # independent random images: accepted, then SfM cannot place them
    run_dir = tmp_path / "run"
    first = run_here(capsys, str(photos), "--out", str(run_dir), "--preset", "preview")
    assert first.returncode == 1 and load_manifest(run_dir).stage("capture").status == "done"

    again = run_here(capsys, str(photos), "--out", str(run_dir), "--preset", "preview")
    assert again.returncode == 2 and "holds an earlier run" in again.stderr and "--resume" in again.stderr
    both = run_here(capsys, str(photos), "--out", str(run_dir), "--resume", "--overwrite")
    assert both.returncode == 2 and "not allowed with" in both.stderr

    # Same names, new pictures: resume sees the changed inputs by sha256 and checks the new photos.
    write_photos(photos, count=3, seed=1)
    resumed = run_here(capsys, str(photos), "--out", str(run_dir), "--preset", "preview", "--resume")
    assert resumed.returncode == 1 and "nothing could be kept" in resumed.stderr
    manifest = load_manifest(run_dir)
    assert not manifest.stage("capture").resumed
    for record, source in zip(manifest.photos, sorted(photos.iterdir()), strict=True):
        assert record.sha256 == file_sha256(source) == file_sha256(run_dir / record.original)

    # Nothing changed: the finished capture is kept, the failed SfM runs again.
    unchanged = run_here(capsys, str(photos), "--out", str(run_dir), "--preset", "preview", "--resume")
    assert unchanged.returncode == 1 and "kept capture" in unchanged.stderr
    manifest = load_manifest(run_dir)
    assert manifest.stage("capture").resumed and not manifest.stage("sfm").resumed
    # A preset change is a changed input of every stage (here: the capture's working size): nothing is kept.
    other = run_here(capsys, str(photos), "--out", str(run_dir), "--preset", "full", "--resume")
    assert "nothing could be kept" in other.stderr

    (run_dir / "notes.txt").write_text("the user's own file")
    overwritten = run_here(capsys, str(photos), "--out", str(run_dir), "--preset", "preview", "--overwrite")
    assert overwritten.returncode == 1
    assert not any(s.resumed for s in load_manifest(run_dir).stages)
    assert (run_dir / "notes.txt").read_text() == "the user's own file"  # only what the studio wrote is deleted


def test_a_folder_that_holds_no_run_is_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from conftest import write_photos

    write_photos(tmp_path / "photos", count=3)
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "thesis.txt").write_text("precious")
    for flag in ([], ["--overwrite"], ["--resume"]):
        result = run_here(capsys, str(tmp_path / "photos"), "--out", str(documents), *flag)
        assert result.returncode == 2 and str(documents) in result.stderr, flag
    assert [p.name for p in documents.iterdir()] == ["thesis.txt"]


def test_links_out_of_the_photo_folder_are_not_followed_and_skipped_entries_named(tmp_path: Path) -> None:
    """Issue 15 item 11: a link to a file outside is never read; dangling links and sub-folders are named."""
    from conftest import write_photos

    from core.cli.run import list_photos

    photos = tmp_path / "photos"
    files = write_photos(photos, count=2)
    (tmp_path / "secret.jpg").write_bytes(files[0].read_bytes())
    (photos / "escape.jpg").symlink_to(tmp_path / "secret.jpg")
    (photos / "passwd.jpg").symlink_to("/etc/passwd")
    (photos / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (photos / "inside.jpg").symlink_to(files[1])
    (photos / "more").mkdir()
    skipped: list[str] = []
    listed = list_photos(photos, skipped)
    assert sorted(p.name for p in listed) == sorted([f.name for f in files] + ["inside.jpg"])
    text = "\n".join(skipped)
    for name, why in [("escape.jpg", "leads out"), ("passwd.jpg", "leads out"), ("dangling.jpg", "dangling"),
                      ("more", "sub-folder")]:
        assert f"{name}: " in text and why in text


def test_a_catalogues_known_distance_reaches_the_job_and_a_bad_one_names_the_line(tmp_path: Path) -> None:
    from core.cli.batch import CatalogueError, read_catalogue, size_changes
    from core.config import preset_config

    for sku in ("MUG-1", "TIN-2"):
        (tmp_path / "catalogue" / sku).mkdir(parents=True)
    csv_path = tmp_path / "skus.csv"
    csv_path.write_text("sku,known_distance\nMUG-1,\"side.jpg:10,20:310,20.5:85\"\nTIN-2,\n", encoding="utf-8")
    skus, _ = read_catalogue(tmp_path / "catalogue", csv_path)
    changes, warning = size_changes(skus[0], preset_config("test"))
    assert changes == {"asset": {"known_distance": "side.jpg:10,20:310,20.5:85"}} and not warning
    assert size_changes(skus[1], preset_config("test")) == ({}, "")
    csv_path.write_text("sku,known_distance\nMUG-1,\"side.jpg:10,20:85\"\n", encoding="utf-8")
    with pytest.raises(CatalogueError, match=r"skus.csv line 2: known distance .* is not PHOTO:X1,Y1:X2,Y2:MM"):
        read_catalogue(tmp_path / "catalogue", csv_path)
    csv_path.write_text("sku,height_mm,known_distance\nMUG-1,95,\"side.jpg:10,20:310,20:85\"\n", encoding="utf-8")
    with pytest.raises(CatalogueError, match="line 2: give a known dimension or a known_distance, not both"):
        read_catalogue(tmp_path / "catalogue", csv_path)
