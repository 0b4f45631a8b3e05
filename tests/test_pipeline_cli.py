"""The command line: help, exit codes, the reason on stderr and the manifest written even when the run fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from core.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_help_documents_every_option() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("--out", "--preset", "--depth-prior-dir", "--depth-model", "--no-depth-prior", "--allow-download",
                   "--seed", "--target-faces", "--verbose", "preview", "balanced", "full", "Exit status"):
        assert option in result.stdout, option


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


def test_missing_input_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli(str(tmp_path / "nope"), "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "does not exist" in result.stderr
