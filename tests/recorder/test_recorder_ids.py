"""A lesson id from the wire or a state file never reaches a path unchecked (issue 18,
item 2): ``../../x`` in a header, in the lesson metadata, in ``meta.json`` of a previous run
or in a spool job writes nothing outside the recorder's folders."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from recorder.archive import Job, LocalArchive, Spool
from recorder.segments import DiskError, LessonRecording
from recorder.service import Recorder
from syncclass.config import RecorderConfig
from syncclass.errors import RecordingError
from syncclass.recorder_wire import Header, LessonMeta
from tests.recorder.test_recorder_units import make_meta

BAD_IDS = ["../../x", "../x", "/tmp/x", "a/b", ".hidden", "..", "x\x00y", "X" * 200, "Ab"]


def recorder(tmp_path: Path) -> Recorder:
    root = tmp_path / "a" / "b"
    rc = RecorderConfig(out_dir=str(root / "out"), spool_dir=str(root / "spool"),
                        archive_dir=str(root / "archive"))
    return Recorder(rc, name="test")


def outside(tmp_path: Path) -> list[Path]:
    """Everything written outside the recorder's root ``tmp_path/a/b``."""
    return [p for p in tmp_path.rglob("*")
            if p not in (tmp_path / "a", tmp_path / "a" / "b")
            and (tmp_path / "a" / "b") not in p.parents]


def test_wire_ids_are_checked_by_the_id_rule() -> None:
    for bad in BAD_IDS:
        header = json.dumps({"v": 1, "kind": "meta", "lesson": bad, "seq": 0}).encode()
        with pytest.raises(ValueError, match="lesson"):
            Header.parse(header)
        meta = dataclasses.replace(make_meta(), lesson_id=bad)
        with pytest.raises(ValueError, match="lesson_id"):
            LessonMeta.parse(meta.to_bytes())


def test_metadata_naming_another_folder_writes_nothing(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    rec = recorder(tmp_path)
    caplog.set_level(logging.WARNING, logger="recorder.service")
    try:
        for bad in ["../../x", "../../../escaped"]:
            meta = dataclasses.replace(make_meta(), lesson_id=bad)
            header = Header("meta", "math-g3-20260101-083000-1", 0).to_bytes()
            rec._handle([header, meta.to_bytes()])  # the header's id is fine, the meta's not
            rec._handle([json.dumps({"v": 1, "kind": "meta", "lesson": bad, "seq": 0}).encode(),
                         meta.to_bytes()])
        assert not rec.live
        assert outside(tmp_path) == []
        assert not (rec.out.exists() and any(rec.out.iterdir()))
        assert "lesson_id" in caplog.text and "bad" in caplog.text
        # A good lesson is recorded where it belongs.
        good = make_meta()
        rec._handle([Header("meta", good.lesson_id, 0).to_bytes(), good.to_bytes()])
        assert (rec.out / good.lesson_id / "meta.json").is_file()
    finally:
        rec._ctx.term()


def test_state_files_with_bad_ids_are_refused(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    try:
        # meta.json of a "previous run" naming another folder: skipped on resume.
        lesson_dir = rec.out / "leftover"
        lesson_dir.mkdir(parents=True)
        bad = dataclasses.replace(make_meta(), lesson_id="../../../evil")
        (lesson_dir / "meta.json").write_text(json.dumps(bad.to_dict()))
        rec._resume_unfinished()
        assert not rec.live and outside(tmp_path) == []
    finally:
        rec._ctx.term()
    with pytest.raises(DiskError, match="not a lesson id"):
        LessonRecording(tmp_path / "rec", dataclasses.replace(make_meta(), lesson_id="../x"),
                        2.0)
    # A spool job naming another folder is never archived.
    spool = Spool(tmp_path / "spool")
    spool.root.mkdir()
    (spool.root / "evil.job.json").write_text(json.dumps(
        {"lesson_id": "../../evil", "files": [], "created_ms": 0}))
    assert spool.jobs() == []
    with pytest.raises(ValueError, match="not a lesson id"):
        spool.add("../x", [], {})
    with pytest.raises(RecordingError, match="not a lesson id"):
        LocalArchive(tmp_path / "archive").put(Job("../x", [], 0), lambda st, p: None)
    assert not (tmp_path / "x").exists() and not (tmp_path / "evil").exists()

