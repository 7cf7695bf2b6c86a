"""Safe YAML loading (rig.config.yamlsafe) and validation into models (rig.config.loader)."""

from __future__ import annotations

import os
import re
import textwrap
import time
import tracemalloc
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rig.config.loader import load_model, validate_data
from rig.config.yamlsafe import load_yaml, parse_yaml, resolve_include
from twin.errors import ConfigError
from twin.units import Power, Temperature


def write(folder: Path, text: str, name: str = "site.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems(call, *args, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        call(*args, **kwargs)
    return caught.value.problems


# ----------------------------------------------------------------------------- plain loading


def test_plain_yaml_loads_with_locations(tmp_path: Path) -> None:
    path = write(tmp_path, """
        name: demo
        heat_pumps:
          - refrigerant: R32
            count: 2
          - refrigerant: R717
            flags: [a, b]
        ratio: 0.5
        empty:
        on_text: 'on'
    """)
    loaded = load_yaml(path)
    assert loaded.data == {
        "name": "demo",
        "heat_pumps": [{"refrigerant": "R32", "count": 2},
                       {"refrigerant": "R717", "flags": ["a", "b"]}],
        "ratio": 0.5, "empty": None, "on_text": "on",
    }
    assert loaded.source == str(path)
    assert loaded.locate(("heat_pumps", 1, "refrigerant")) == (5, 5)
    assert loaded.locate(("heat_pumps", 1, "flags", 1)) == (6, 16)
    assert loaded.locate(("heat_pumps", 1, "nonexistent", 3)) == (5, 5)  # nearest parent
    assert loaded.locate(("nothing",)) == (1, 1)
    assert loaded.where(("ratio",)) == f"{path}:7"


def test_aliases_and_merge_keys_are_expanded(tmp_path: Path) -> None:
    loaded = load_yaml(write(tmp_path, """
        defaults: &d
          count: 2
          refrigerant: R32
        pumps:
          - <<: *d
            count: 3
          - *d
    """))
    assert loaded.data["pumps"] == [{"count": 3, "refrigerant": "R32"},
                                    {"count": 2, "refrigerant": "R32"}]
    loaded.data["pumps"][1]["count"] = 9  # expanded copies, not shared objects
    assert loaded.data["defaults"]["count"] == 2
    assert loaded.locate(("pumps", 0, "count")) == (6, 5)  # the overriding key
    assert loaded.locate(("pumps", 0, "refrigerant")) == (3, 3)  # where the value was written


def test_empty_file_is_none(tmp_path: Path) -> None:
    assert load_yaml(write(tmp_path, "# nothing here\n")).data is None


def test_timestamps_stay_strings() -> None:
    assert parse_yaml("day: 2024-01-31").data == {"day": "2024-01-31"}


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(("text", "tag"), [
    ("a: 1\nb: !!python/object/apply:os.system ['echo hi']\n", "!!python/object/apply:os.system"),
    ("a: 1\nb: !!python/object:builtins.dict {}\n", "!!python/object:builtins.dict"),
    ("a: 1\nb: !include other.yaml\n", "!include"),
    ("a: 1\nb: !foo 3\n", "!foo"),
    ("a: 1\nb: !!str 3\n", "!!str"),
    ("a: 1\nb: !!binary aGk=\n", "!!binary"),
])
def test_any_explicit_tag_is_refused(tmp_path: Path, text: str, tag: str) -> None:
    path = write(tmp_path, text)
    (line,) = problems(load_yaml, path)
    assert line.startswith(f"{path}:2: tag '{tag}' is not allowed")


def test_billion_laughs_is_refused_quickly(tmp_path: Path) -> None:
    rows = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        rows.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    path = write(tmp_path, "\n".join(rows) + "\n")
    started = time.perf_counter()
    (line,) = problems(load_yaml, path)
    assert time.perf_counter() - started < 1.0
    assert "alias" in line and line.startswith(f"{path}:")
    tracemalloc.start()
    try:
        problems(load_yaml, path, max_alias_expansions=10**9)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20  # bounded by max_nodes, not by the 10**9 expansion


def test_alias_expansion_limit(tmp_path: Path) -> None:
    path = write(tmp_path, "a: &a [1]\nb: [*a, *a, *a]\n")
    assert load_yaml(path, max_alias_expansions=3).data["b"] == [[1], [1], [1]]
    (line,) = problems(load_yaml, path, max_alias_expansions=2)
    assert line.startswith(f"{path}:2: more than 2 alias expansions")


def test_recursive_alias_is_refused() -> None:
    (line,) = problems(parse_yaml, "a: &a\n  - *a\n")
    assert line == "<string>:2: alias '*a' refers to a node that contains it (recursive alias)"


def test_oversized_file_refused_before_parsing(tmp_path: Path) -> None:
    path = write(tmp_path, "a: [" + "1, " * 600 + "\n")  # also broken YAML: never parsed
    (line,) = problems(load_yaml, path, max_bytes=1000)
    assert line.startswith(f"{path}:1: file is ") and "1,000 allowed" in line


def test_too_deep_nesting_is_refused() -> None:
    (line,) = problems(parse_yaml, "[" * 200 + "]" * 200)
    assert "nesting deeper than" in line


def test_duplicate_key_names_key_and_lines(tmp_path: Path) -> None:
    path = write(tmp_path, """
        racks:
          max_power: 25 kW
          count: 3
          max_power: 30 kW
    """)
    assert problems(load_yaml, path) == [
        f"{path}:4: duplicate key 'max_power' (first at line 2)"]


@pytest.mark.parametrize(("text", "shown"), [("1: x", "1"), ("on: x", "on"), ("null: x", "null"),
                                             ("[a]: x", None)])
def test_non_string_key_is_refused(text: str, shown: str | None) -> None:
    (line,) = problems(parse_yaml, "ok: 1\n" + ("? [a]\n: x" if shown is None else text))
    assert line.startswith("<string>:2: ")
    if shown is not None:
        assert f"key {shown} is read as" in line and f"quote it: '{shown}'" in line


def test_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, """
        a: 1
        b: [1, 2
        c: 3
    """)
    (line,) = problems(load_yaml, path)
    assert re.match(rf"{re.escape(str(path))}:3:[0-9]+: YAML syntax error: ", line)
    assert "flow sequence at line 2, column 4" in line
    (line,) = problems(parse_yaml, "a: 1\nb: c: d\n")
    assert line.startswith("<string>:2:5: YAML syntax error: mapping values are not allowed")


def test_several_documents_are_refused() -> None:
    (line,) = problems(parse_yaml, "a: 1\n---\nb: 2\n")
    assert line.startswith("<string>:2: more than one YAML document")


def test_missing_or_undecodable_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    (line,) = problems(load_yaml, missing)
    assert line.startswith(f"{missing}:1: cannot read the file")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: 1\nb: \xff\n")
    assert problems(load_yaml, bad) == [f"{bad}:2: not valid UTF-8 (byte 8)"]
    assert problems(load_yaml, tmp_path)[0].startswith(f"{tmp_path}:1: not a regular file")


# ----------------------------------------------------------------------------- includes


def test_include_inside_folder_resolves(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    target = write(tmp_path / "parts", "a: 1\n", "pumps.yaml")
    assert resolve_include(tmp_path, "parts/pumps.yaml") == target.resolve()
    assert resolve_include(tmp_path, "parts/../parts/pumps.yaml") == target.resolve()
    os.symlink(target, tmp_path / "link.yaml")  # a symlink that stays inside is fine
    assert resolve_include(tmp_path, "link.yaml") == target.resolve()


def test_include_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "site"
    base.mkdir()
    outside = write(tmp_path, "secret: 1\n", "x.yaml")
    os.symlink(outside, base / "sneaky.yaml")
    os.symlink(tmp_path, base / "up")
    for relative in ("../x.yaml", "sneaky.yaml", "up/x.yaml", "a/../../x.yaml"):
        (line,) = problems(resolve_include, base, relative, where="site.yaml:7")
        assert line.startswith(f"site.yaml:7: include '{relative}' resolves to ")
        assert "outside" in line
    (line,) = problems(resolve_include, base, str(outside))
    assert line.startswith(f"{base}:1: include '{outside}' is an absolute")
    assert problems(resolve_include, base, "~/x.yaml")[0].endswith("including file's folder")
    assert "names the folder itself" in problems(resolve_include, base, ".")[0]


# ----------------------------------------------------------------------------- models


class HeatPump(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refrigerant: Literal["R32", "R717", "R1234ze(E)"] = "R32"
    count: int = Field(1, ge=1, le=50)
    capacity: Power = Field(500e3, gt=0, le=5e6)


class Loop(BaseModel):
    model_config = ConfigDict(extra="forbid")

    supply: Temperature = Field(30.0, ge=10, le=45)
    name: str


class Plant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site: str
    margin: float = Field(0.0, ge=0)
    loop: Loop
    heat_pumps: list[HeatPump] = []

    @model_validator(mode="after")
    def _enough(self) -> Plant:
        if len(self.heat_pumps) > 3:
            raise ValueError("at most 3 heat pumps")
        return self


PLANT = """
    site: demo
    margin: 1
    loop:
      name: facility
      supply: 30 degC
    heat_pumps:
      - refrigerant: R32
        count: 2
      - refrigerant: R717
        capacity: 1.2 MW
"""


def test_valid_file_loads_into_model(tmp_path: Path) -> None:
    plant = load_model(write(tmp_path, PLANT), Plant)
    assert plant.heat_pumps[1].capacity == 1.2e6
    assert plant.loop.supply == 30.0


def edit(old: str, new: str) -> str:
    assert old in PLANT
    return PLANT.replace(old, new)


def test_unknown_key_lists_allowed_keys_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, edit("        count: 2\n", "        count: 2\n        cop: 4\n"))
    assert problems(load_model, path, Plant) == [
        f"{path}:9: heat_pumps[0].cop: unknown key 'cop' (allowed: refrigerant, count, capacity)"]
    path = write(tmp_path, edit("margin: 1", "margn: 1"))
    (line,) = problems(load_model, path, Plant)
    assert line == (f"{path}:2: margn: unknown key 'margn' (allowed: site, margin, loop, "
                    "heat_pumps; did you mean 'margin'?)")


def test_out_of_range_number_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, edit("margin: 1", "margin: -3"))
    assert problems(load_model, path, Plant) == [f"{path}:2: margin: must be >= 0 (got -3)"]
    path = write(tmp_path, edit("count: 2", "count: 99"))
    assert problems(load_model, path, Plant) == [
        f"{path}:8: heat_pumps[0].count: must be <= 50 (got 99)"]


def test_out_of_range_quantity_speaks_its_unit(tmp_path: Path) -> None:
    path = write(tmp_path, edit("capacity: 1.2 MW", "capacity: 6 MW"))
    assert problems(load_model, path, Plant) == [
        f"{path}:10: heat_pumps[1].capacity: must be <= 5 MW (got '6 MW')"]
    path = write(tmp_path, edit("supply: 30 degC", "supply: 280 K"))
    assert problems(load_model, path, Plant) == [
        f"{path}:5: loop.supply: must be >= 10 degC (got '280 K' = 6.85 degC)"]


def test_bad_unit_string_gives_unit_error_text(tmp_path: Path) -> None:
    path = write(tmp_path, edit("capacity: 1.2 MW", "capacity: 1.2 MJ"))
    assert problems(load_model, path, Plant) == [
        f"{path}:10: heat_pumps[1].capacity: expected a power such as '25 kW' "
        "(units: W, kW, MW), got '1.2 MJ'"]


def test_missing_field_points_at_parent(tmp_path: Path) -> None:
    path = write(tmp_path, edit("      name: facility\n", ""))
    assert problems(load_model, path, Plant) == [f"{path}:3: loop.name: missing required field"]


def test_literal_lists_allowed_values(tmp_path: Path) -> None:
    path = write(tmp_path, edit("refrigerant: R717", "refrigerant: R290"))
    assert problems(load_model, path, Plant) == [
        f"{path}:9: heat_pumps[1].refrigerant: must be one of 'R32', 'R717' or 'R1234ze(E)' "
        "(got 'R290')"]


def test_all_problems_at_once_sorted_by_line(tmp_path: Path) -> None:
    text = (edit("count: 2", "count: 0").replace("margin: 1", "margin: x")
            .replace("refrigerant: R717", "refrigerant: R717\n        speed: 3"))
    text = text.replace("    site: demo\n", "")
    path = write(tmp_path, text)
    lines = problems(load_model, path, Plant)
    assert [line.split(":")[1] for line in lines] == ["1", "1", "7", "9"]
    assert lines[0] == f"{path}:1: site: missing required field"
    assert lines[1] == f"{path}:1: margin: expected a number (got 'x')"
    assert lines[2] == f"{path}:7: heat_pumps[0].count: must be >= 1 (got 0)"
    assert lines[3].startswith(f"{path}:9: heat_pumps[1].speed: unknown key 'speed'")


def test_model_validator_error_and_wrong_shapes(tmp_path: Path) -> None:
    many = PLANT + "      - {}\n" * 3
    path = write(tmp_path, many)
    assert problems(load_model, path, Plant) == [f"{path}:1: at most 3 heat pumps"]
    path = write(tmp_path, edit("    heat_pumps:\n", "    heat_pumps: 3\n").split("      -")[0])
    (line,) = problems(load_model, path, Plant)
    assert line == f"{path}:6: heat_pumps: expected a list (got 3)"
    path = write(tmp_path, "- 1\n- 2\n")
    assert problems(load_model, path, Plant) == [
        f"{path}:1: expected a mapping of keys to values (got a list)"]
    path = write(tmp_path, "")
    assert problems(load_model, path, Plant) == [f"{path}:1: the file is empty; expected a mapping"]


def test_yes_no_booleans_get_a_hint() -> None:
    (line,) = problems(validate_data, {"site": True, "loop": {"name": "x"}}, Plant)
    assert line.startswith("<string>: site: expected a text string (got true); YAML reads")


def test_section_is_validated_with_full_paths(tmp_path: Path) -> None:
    text = "version: 1\nplant:\n" + textwrap.indent(textwrap.dedent(PLANT).lstrip("\n"), "  ")
    path = write(tmp_path, text.replace("margin: 1", "margin: -1"))
    assert problems(load_model, path, Plant, section="plant") == [
        f"{path}:4: plant.margin: must be >= 0 (got -1)"]
    assert load_model(write(tmp_path, text), Plant, section="plant").site == "demo"
    (line,) = problems(load_model, path, Plant, section="site")
    assert line == f"{path}:1: missing section 'site' (found: version, plant)"


def test_unknown_keys_refused_even_if_model_allows_them() -> None:
    class Loose(BaseModel):
        a: int = 0

    (line,) = problems(validate_data, {"a": 1, "b": 2}, Loose, source="cli")
    assert line == "cli: b: unknown key 'b' (allowed: a)"


def test_validate_data_with_locate() -> None:
    loaded = parse_yaml("site: s\nloop:\n  name: n\n  supply: 99\n", source="inline.yaml")
    (line,) = problems(validate_data, loaded.data, Plant, source=loaded.source,
                       locate=loaded.locate)
    assert line == "inline.yaml:4: loop.supply: must be <= 45 degC (got 99)"


def test_pure_python_parser_behaves_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    import rig.config.yamlsafe

    monkeypatch.setattr(rig.config.yamlsafe, "_Loader", yaml.SafeLoader)
    loaded = parse_yaml("d: &d {a: 1}\ne:\n  <<: *d\n  b: [x]\n")
    assert loaded.data["e"] == {"a": 1, "b": ["x"]}
    assert loaded.locate(("e", "b", 0)) == (4, 7)
    assert problems(parse_yaml, "a: !foo 1\n") == [
        "<string>:1: tag '!foo' is not allowed (plain YAML only: no tags; quote the value if "
        "it is text)"]
