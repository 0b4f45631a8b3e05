"""Hostile uploads (issue 15): zips that would fill the disk, damaged and encrypted zips, non-photos, bad settings.

Every case ends in one message naming the upload, and nothing of a refused file stays in the draft folder.
"""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import pytest

from core.jobs import intake
from core.settings import SettingsError, checked_data_dir, env_int, folder_bytes
from tests.conftest import write_photos


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_zip_of_large_zero_members_stores_nothing(tmp_path: Path) -> None:
    # The probe's case: ten 59 MB members of zeros in a ~600 KB zip stored 563 MB in the draft folder.
    data = _zip({f"IMG_{i}.jpg": b"\0" * 59_000_000 for i in range(10)})
    assert len(data) < 1_000_000
    folder = tmp_path / "draft"
    received = intake.receive_upload(folder, "catalogue.zip", data, existing=0)
    assert len(received) == 10 and not any(p.accepted for p in received)
    assert all("is not a photo" in p.reason and p.reason.startswith(f"IMG_{i}.jpg") for i, p in enumerate(received))
    assert (folder_bytes(folder) if folder.exists() else 0) == 0


def test_rejected_photo_files_are_not_kept(tmp_path: Path) -> None:
    photo = write_photos(tmp_path / "p", count=1)[0].read_bytes()
    truncated = photo[: len(photo) // 3]  # a JPEG header, then nothing: the capture check refuses it
    folder = tmp_path / "draft"
    received = intake.receive_upload(folder, "cut.jpg", truncated, existing=0)
    assert not received[0].accepted and received[0].stored == ""
    assert [p for p in folder.iterdir() if p.is_file()] == [] if folder.exists() else True


def _corrupt_member_data(data: bytes) -> bytes:
    """The zip with bytes in the middle of the first member's compressed data flipped."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    info = archive.infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    middle = start + info.compress_size // 2
    damaged = bytearray(data)
    for i in range(middle, middle + 16):
        damaged[i] ^= 0xA5
    return bytes(damaged)


@pytest.mark.parametrize("damage", ["member_data", "crc", "local_header", "truncated"])
def test_damaged_zip_gives_one_message_and_leaves_nothing(tmp_path: Path, damage: str) -> None:
    photos = [p.read_bytes() for p in write_photos(tmp_path / "p", count=3)]
    good = _zip({"a.jpg": photos[0], "b.jpg": photos[1], "c.jpg": photos[2]})
    archive = zipfile.ZipFile(io.BytesIO(good))
    last = archive.infolist()[-1]
    if damage == "member_data":
        # The last member damaged: the first two were already unpacked and must be removed again.
        data = bytearray(good)
        start = last.header_offset + 30 + len(last.filename.encode()) + len(last.extra)
        for i in range(start + 40, start + 80):
            data[i] ^= 0xA5
        data = bytes(data)
    elif damage == "crc":
        stored = _zip({"a.jpg": photos[0], "b.jpg": photos[1], "c.jpg": photos[2]}, zipfile.ZIP_STORED)
        last = zipfile.ZipFile(io.BytesIO(stored)).infolist()[-1]
        data = bytearray(stored)
        data[last.header_offset + 30 + len(last.filename.encode()) + 100] ^= 0xFF  # content changed, CRC kept
        data = bytes(data)
    elif damage == "local_header":
        data = bytearray(good)
        data[last.header_offset: last.header_offset + 4] = b"XXXX"
        data = bytes(data)
    else:
        data = good[: len(good) - 40]
    folder = tmp_path / "draft"
    received = intake.receive_upload(folder, "shoot.zip", data, existing=0)
    assert len(received) == 1 and not received[0].accepted, [p.reason for p in received]
    reason = received[0].reason
    assert reason.startswith("shoot.zip: ") and ("again" in reason)
    if damage == "crc":
        assert "checksum" in reason
    assert not folder.exists() or folder_bytes(folder) == 0


def test_encrypted_zip_is_named_as_such(tmp_path: Path) -> None:
    photo = write_photos(tmp_path / "p", count=1)[0].read_bytes()
    data = bytearray(_zip({"a.jpg": photo}, zipfile.ZIP_STORED))
    # Set the "encrypted" flag bit in the local and the central header (what an encrypting tool writes).
    data[6] |= 0x1
    central = bytes(data).rfind(b"PK\x01\x02")
    data[central + 8] |= 0x1
    received = intake.receive_upload(tmp_path / "draft", "secret.zip", bytes(data), existing=0)
    assert len(received) == 1 and "password-protected" in received[0].reason


def test_bad_operator_settings_are_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from core.jobs.backend import max_concurrent_jobs

    monkeypatch.setenv("PRODUCT_STUDIO_MAX_JOBS", "two")
    with pytest.raises(SettingsError, match="PRODUCT_STUDIO_MAX_JOBS='two' is not a whole number"):
        max_concurrent_jobs()
    monkeypatch.setenv("PRODUCT_STUDIO_MAX_JOBS", "0")
    with pytest.raises(SettingsError, match="below 1"):
        max_concurrent_jobs()
    monkeypatch.setenv("PRODUCT_STUDIO_MAX_JOBS", "3")
    assert max_concurrent_jobs() == 3
    assert env_int("PRODUCT_STUDIO_UNSET_FOR_TEST", 7) == 7
    a_file = tmp_path / "data.txt"
    a_file.write_text("x")
    with pytest.raises(SettingsError, match="is a file, not a folder"):
        checked_data_dir(a_file)
    assert checked_data_dir(tmp_path / "new" / "data").is_dir()


def test_quota_refuses_uploads_with_the_reason(studio_data: Path, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    photo = write_photos(tmp_path / "p", count=1)[0].read_bytes()
    (studio_data / "runs").mkdir()
    (studio_data / "runs" / "old.bin").write_bytes(b"x" * 2_000_000)
    monkeypatch.setenv("PRODUCT_STUDIO_QUOTA_GB", "0.002")
    refused = intake.receive_upload(studio_data / "drafts" / "d", "IMG_1.jpg", photo, existing=0)
    assert not refused[0].accepted and "storage is full" in refused[0].reason
    monkeypatch.setenv("PRODUCT_STUDIO_QUOTA_GB", "1")
    assert intake.receive_upload(studio_data / "drafts" / "d", "IMG_1.jpg", photo, existing=0)[0].accepted


def test_retention_keeps_the_newest_sample_runs(studio_data: Path, monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    from core.jobs.store import Store

    store = Store(studio_data)
    photos_dir = studio_data / "uploads" / "x"
    photos_dir.mkdir(parents=True)
    jobs = []
    for _ in range(4):
        job = store.create_job(product_name="Sample product", sku="SAMPLE", preset="test", config_json="{}",
                               photos_dir=photos_dir)
        store.finish(job.id, "done")
        store.run_dir(job).mkdir(parents=True)
        jobs.append(job)
        time.sleep(0.01)
    other = store.create_job(product_name="Mug", sku="M1", preset="test", config_json="{}", photos_dir=photos_dir)
    store.finish(other.id, "done")
    monkeypatch.setenv("PRODUCT_STUDIO_SAMPLE_RUNS", "2")
    deleted = store.apply_retention()
    assert sorted(deleted) == sorted(j.id for j in jobs[:2])
    assert store.get_job(jobs[0].id) is None and not store.run_dir(jobs[0]).exists()
    assert store.get_job(jobs[3].id) is not None and store.get_job(other.id) is not None
    assert photos_dir.is_dir()  # shared with jobs that stay
