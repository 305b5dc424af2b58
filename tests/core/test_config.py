"""Config loading: the sample county loads; bad configs name file, field path and problem."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncclass.config import default_config_path, load_config, parse_config
from syncclass.errors import ConfigError
from tests.county import SAMPLE, County


@pytest.fixture
def data(county: County) -> dict[str, Any]:
    return county.data


def test_sample_county_loads() -> None:
    config = load_config(SAMPLE)
    assert [c.role for c in config.classrooms] == ["main", "receiving", "receiving"]
    pairing = config.pairings[0]
    assert config.classroom(pairing.main).role == "main"
    assert len(pairing.receiving) == 2
    assert config.timetable[0].subject and config.timetable[0].teacher
    assert set(config.views) == {"students_view", "teacher_view"}
    assert config.media.width == 1280 and config.media.fps == 15
    # The embedded default is the same file.
    assert load_config(default_config_path()) == config


def bad(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "county.yaml")
    return str(info.value)


def test_missing_field_names_path(data: dict[str, Any]) -> None:
    del data["classrooms"][1]["token"]
    assert "county.yaml: classrooms[1].token: Field required" in bad(data)


def test_wrong_type_names_path(data: dict[str, Any]) -> None:
    data["media"]["fps"] = "fast"
    assert "county.yaml: media.fps:" in bad(data)


def test_unknown_reference(data: dict[str, Any]) -> None:
    data["pairings"][0]["receiving"].append("nowhere")
    assert "pairings[0].receiving[2]: unknown classroom 'nowhere'" in bad(data)


def test_pairing_main_must_be_main(data: dict[str, Any]) -> None:
    data["pairings"][0]["main"] = "hetou-3"
    assert "pairings[0].main: classroom 'hetou-3' has role 'receiving'" in bad(data)


def test_duplicate_token_not_revealed(data: dict[str, Any]) -> None:
    data["classrooms"][2]["token"] = data["classrooms"][1]["token"]
    msg = bad(data)
    assert "classrooms[2].token: duplicate token" in msg
    assert data["classrooms"][1]["token"] not in msg


def test_unknown_key_refused(data: dict[str, Any]) -> None:
    data["classrooms"][0]["colour"] = "red"
    assert "classrooms[0].colour: Extra inputs are not permitted" in bad(data)


def test_odd_size_refused(data: dict[str, Any]) -> None:
    data["media"]["width"] = 1279
    assert "media.width" in bad(data)


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_config([1, 2], "x.yaml")


def test_file_errors(tmp_path: Path, data: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("county: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config(broken)
    d = copy.deepcopy(data)
    d["views"]["students_view"]["featured"] = None
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(d, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c.yaml: views.students_view: .*featured"):
        load_config(p)


# -- issue 24: what an operator writing a county meets --------------------------------------
def write(tmp_path: Path, data: dict[str, Any], text: str | None = None) -> Path:
    p = tmp_path / "county.yaml"
    p.write_text(text if text is not None else yaml.safe_dump(data, allow_unicode=True),
                 encoding="utf-8")
    return p


def test_unquoted_time_is_the_time_written(tmp_path: Path, data: dict[str, Any]) -> None:
    # YAML 1.1 reads `start: 9:00` as 540 (base 60), which became 00:09 with no warning.
    text = yaml.safe_dump(data, allow_unicode=True).replace("start: 08:30", "start: 9:00")
    assert "start: 9:00\n" in text
    config = load_config(write(tmp_path, data, text))
    assert config.timetable[0].start == dt.time(9, 0)


def test_time_as_number_refused_with_the_fix(data: dict[str, Any]) -> None:
    data["timetable"][0]["start"] = 540  # what yaml.safe_load makes of 9:00
    msg = bad(data)
    assert "timetable[0].start:" in msg and 'start: "09:00"' in msg
    data["timetable"][0]["start"] = 30600  # yaml.safe_load's 8:30:00
    assert 'start: "08:30"' in bad(data)
    data["timetable"][0]["start"] = "25:00"
    assert "hours 0-23" in bad(data)
    data["timetable"][0]["start"] = "8:30"
    assert parse_config(data).timetable[0].start == dt.time(8, 30)


def test_pattern_errors_in_words(data: dict[str, Any]) -> None:
    data["classrooms"][1]["id"] = "Hetou 3"
    msg = bad(data)
    assert "classrooms[1].id: 'Hetou 3' is not allowed here: use 1-63 characters" in msg
    assert "e.g. 'hetou-3'" in msg and "^[" not in msg
    data = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))
    data["ops"]["webhooks"] = [{"url": "ftp://x/?key=s3cret", "secret": "x" * 16}]
    msg = bad(data)
    assert "ops.webhooks[0].url: not allowed here: give an http:// or https://" in msg
    assert "s3cret" not in msg and "^https" not in msg


def test_every_pattern_has_words() -> None:
    # Every pattern in the schema says in words what it allows. The classroom label's rule
    # is being reworked (Unicode names) and is left out here; unworded patterns still get
    # a sentence (see test_unworded_pattern_still_a_sentence).
    from syncclass.config import PATTERN_WORDS, CountyConfig

    found: list[tuple[str, str]] = []

    def walk(node: Any, name: str) -> None:
        if isinstance(node, dict):
            if "pattern" in node and isinstance(node["pattern"], str):
                found.append((name, node["pattern"]))
            for k, v in node.items():
                walk(v, k if k not in ("properties", "anyOf", "items") else name)
        elif isinstance(node, list):
            for v in node:
                walk(v, name)

    walk(CountyConfig.model_json_schema(), "")
    assert len(found) >= 3
    missing = [(n, p) for n, p in found if p not in PATTERN_WORDS and n != "label"]
    assert not missing


def test_unworded_pattern_still_a_sentence() -> None:
    from syncclass.config import _pattern_words

    msg = _pattern_words({"ctx": {"pattern": "^x+$"}, "input": "y"})
    assert msg == "not allowed here: it must have the form of the regular expression ^x+$"


def test_relative_paths_follow_the_config_file(tmp_path: Path, data: dict[str, Any],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    data["mixer"]["data_dir"] = "state/mixer"
    data["analytics"] = {"database_url": "sqlite:///state/a.db"}
    data["classrooms"][1]["devices"] = {"camera": {"kind": "file", "path": "media/c.mp4"},
                                        "microphone": {"kind": "file", "path": "/abs/m.wav"}}
    folder = tmp_path / "county"
    folder.mkdir()
    path = write(folder, data)
    monkeypatch.chdir(tmp_path)  # another directory than the config's
    config = load_config(Path("county") / "county.yaml")
    assert config.mixer.data_dir == str(folder / "state/mixer")
    assert config.analytics.database_url == f"sqlite:///{folder / 'state/a.db'}"
    assert config.classrooms[1].devices.camera.path == str(folder / "media/c.mp4")
    assert config.classrooms[1].devices.microphone.path == "/abs/m.wav"
    assert config.relative_paths["mixer.data_dir"] == "state/mixer"
    assert "classrooms[1].devices.microphone.path" not in config.relative_paths
    # The embedded sample county keeps them relative to the current directory (demo).
    assert load_config(default_config_path()).mixer.data_dir == "var/mixer"
    assert load_config(path) == config


def test_check_config_finds_missing_files(tmp_path: Path, data: dict[str, Any],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from syncclass.cli import main
    from syncclass.config_check import check_paths

    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "c.mp4").write_bytes(b"x")
    (tmp_path / "blocker").write_text("a file where a folder should be")
    data["classrooms"][0]["devices"] = {"camera": {"kind": "file", "path": "media/c.mp4"},
                                        "microphone": {"kind": "file", "path": "media/m.wav"}}
    data["classrooms"][1]["devices"] = {"camera": {"kind": "file", "path": "media/gone.mp4"},
                                        "fallback_to_synthetic": True}
    data["classrooms"][2]["devices"] = {"camera": {"kind": "synthetic", "path": "unused.mp4"},
                                        "microphone": {"kind": "microphone", "name": "USB"}}
    data["mixer"]["tls"] = {"cert": "tls/cert.pem", "key": "tls/key.pem"}
    data["recorder"] = {"out_dir": "blocker/rec"}
    config = load_config(write(tmp_path, data))
    found = {f.field: f for f in check_paths(config)}
    assert set(found) == {"classrooms[0].devices.microphone.path",
                          "classrooms[1].devices.camera.path", "mixer.tls.cert",
                          "mixer.tls.key", "recorder.out_dir"}
    assert found["classrooms[0].devices.microphone.path"].level == "error"
    assert "no such file" in found["mixer.tls.cert"].message
    assert found["classrooms[1].devices.camera.path"].level == "warning"
    assert "fallback_to_synthetic" in found["classrooms[1].devices.camera.path"].message
    assert "is a file, not a folder" in found["recorder.out_dir"].message
    assert found["recorder.out_dir"].level == "warning"  # matters where the recorder runs
    assert main(["check-config", "--config", str(tmp_path / "county.yaml")]) == 2
    err = capsys.readouterr().err
    assert "error: mixer.tls.cert: " in err and "3 error(s)" in err
    assert "warning: recorder.out_dir: " in err
    # The sample county has nothing missing.
    assert main(["check-config"]) == 0
    assert "OK" in capsys.readouterr().out


def test_directing_timing_is_checked_in_words(data: dict[str, Any]) -> None:
    data["media"]["directing"] = {"release_s": 0.3, "pause_s": 0.5}
    message = bad(data)
    assert "county.yaml: media.directing:" in message
    assert "release_s (0.3 s) must be at least pause_s (0.5 s)" in message
    data["media"]["directing"] = {"onset_s": 0.1}
    assert "media.directing.onset_s: Input should be greater than or equal to 0.3" in bad(data)
