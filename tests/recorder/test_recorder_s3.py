"""The S3 archive against a real S3-compatible HTTP server (scripts/s3server.sh: moto)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recorder.archive import Job, S3Archive, Spool, Uploader
from syncclass.config import S3ArchiveConfig
from syncclass.demo import free_port

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024

async def wait_until(predicate: Any, seconds: float = 5.0) -> bool:
    """Poll ``predicate`` every 20 ms for up to ``seconds``; its last value."""
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())



class S3Server:
    """scripts/s3server.sh on a port; start/stop as the test says (objects in memory)."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                ["bash", str(ROOT / "scripts" / "s3server.sh"), str(self.port)],
                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), 0.5):
                return
            time.sleep(0.1)
        raise TimeoutError("s3 server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def s3server(tmp_path: Path) -> Iterator[S3Server]:
    server = S3Server(free_port(), tmp_path / "s3.log")
    try:
        yield server
    finally:
        server.stop()


def s3_config(server: S3Server) -> S3ArchiveConfig:
    return S3ArchiveConfig(endpoint_url=server.url, bucket="lessons-archive",
                           access_key_id="test", secret_access_key="test",
                           part_size_mb=5, create_bucket=True, timeout_s=2)


def lesson_files(tmp: Path) -> list[Path]:
    d = tmp / "lesson"
    d.mkdir()
    big = d / "lesson.mp4"
    big.write_bytes(os.urandom(11 * MIB + 12345))  # three multipart parts
    small = d / "metadata.json"
    small.write_text('{"lesson_id": "l1"}')
    return [big, small]


def remote_sha256(target: S3Archive, key: str) -> str:
    body = target.client.get_object(Bucket=target.cfg.bucket, Key=key)["Body"].read()
    return hashlib.sha256(body).hexdigest()


async def test_upload_waits_for_the_store_then_completes_verified(
        tmp_path: Path, s3server: S3Server) -> None:
    files = lesson_files(tmp_path)
    spool = Spool(tmp_path / "spool")
    spool.add("l1", files, {})
    target = S3Archive(s3_config(s3server))
    done: list[tuple[Job, dict[str, str]]] = []
    progress: list[float] = []
    uploader = Uploader(spool, target, retry_max_s=1.0,
                        on_done=lambda job, where: done.append((job, where)),
                        on_progress=lambda lid, stage, pct: progress.append(pct))
    uploader.start()
    try:
        # The store is down: attempts fail, the job stays in the spool.
        await wait_until(lambda: uploader.failures >= 2, 30)
        assert uploader.failures >= 2 and not done
        assert [j.lesson_id for j in spool.jobs()] == ["l1"]
        await asyncio.to_thread(s3server.start)
        await wait_until(lambda: bool(done), 60)
    finally:
        await uploader.aclose()
    assert done, "upload did not complete after the store came back"
    job, where = done[0]
    assert where["lesson.mp4"] == "s3://lessons-archive/lessons/l1/lesson.mp4"
    for f in job.files:
        assert await asyncio.to_thread(remote_sha256, target, target.key(job, f)) == f.sha256
    assert spool.jobs() == []
    assert max(progress) == 100.0


def test_multipart_resumes_from_parts_already_stored(tmp_path: Path,
                                                     s3server: S3Server) -> None:
    s3server.start()
    files = lesson_files(tmp_path)
    spool = Spool(tmp_path / "spool")
    job = spool.add("l2", files, {})
    target = S3Archive(s3_config(s3server))
    target._ensure_bucket()
    big = job.files[0]
    key = target.key(job, big)
    # A previous run stored part 1, then died: its upload id is in the spool job.
    upload_id = target.client.create_multipart_upload(Bucket=target.cfg.bucket,
                                                      Key=key)["UploadId"]
    with open(big.path, "rb") as fh:
        target.client.upload_part(Bucket=target.cfg.bucket, Key=key, UploadId=upload_id,
                                  PartNumber=1, Body=fh.read(5 * MIB))
    job.state["uploads"] = {big.name: upload_id}
    job.save()
    sent: list[int] = []
    original = target.client.upload_part

    def counting(**kw: Any) -> Any:
        sent.append(kw["PartNumber"])
        return original(**kw)

    target.client.upload_part = counting
    assert job.path is not None
    target.put(Job.load(job.path), lambda stage, pct: None)
    assert sent == [2, 3]  # part 1 was not sent again
    assert remote_sha256(target, key) == big.sha256
