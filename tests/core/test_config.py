"""Config loading: the sample county loads; bad configs name file, field path and problem."""

from __future__ import annotations

import copy
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
