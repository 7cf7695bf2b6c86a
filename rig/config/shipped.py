"""Data shipped with heatrig: site descriptions, example scenarios and Grafana dashboards.

They are package data (``heatrig_data.sites``, ``heatrig_data.scenarios`` and
``heatrig_data.dashboards``: the repository's ``sites/``, ``scenarios/`` and
``grafana/dashboards/`` folders, mapped in pyproject.toml) read with `importlib.resources`,
so an editable install and a wheel install find the same files. A name such as
``reference-1mw`` or ``cdu-leak`` means ``<name>.yaml`` in the shipped folder; a path given
by the user is used as it is.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from twin.errors import ConfigError, HeatrigError

Kind = Literal["sites", "scenarios", "dashboards"]
PACKAGES: dict[Kind, str] = {
    "sites": "heatrig_data.sites",
    "scenarios": "heatrig_data.scenarios",
    "dashboards": "heatrig_data.dashboards",
}
YAML_SUFFIXES = (".yaml", ".yml")


def folder(kind: Kind) -> Path:
    """The folder of the shipped ``kind`` files (an installed package's folder on disk)."""
    try:
        root = resources.files(PACKAGES[kind])
    except ModuleNotFoundError:  # rig imported from a checkout that was never installed
        raise HeatrigError(f"{PACKAGES[kind]}: heatrig's shipped data is not installed; "
                           "install heatrig (in a checkout: pip install -e .)") from None
    if not isinstance(root, Path):  # e.g. a zipped install: nothing heatrig supports
        raise HeatrigError(f"{PACKAGES[kind]}: shipped data is not a folder on disk ({root})")
    return root


def names(kind: Kind, suffix: str = ".yaml") -> list[str]:
    """The names of the shipped ``kind`` files (file names without ``suffix``), sorted."""
    return sorted(p.name[: -len(suffix)] for p in folder(kind).iterdir()
                  if p.name.endswith(suffix) and p.is_file())


def is_name(text: str) -> bool:
    """True for a bare name (``cdu-leak``), False for anything written as a path."""
    path = Path(text)
    return (bool(text) and len(path.parts) == 1 and not path.is_absolute()
            and path.suffix.lower() not in YAML_SUFFIXES)


def resolve(name_or_path: str | Path, kind: Kind, *, near: Path | None = None) -> Path:
    """The YAML file meant by ``name_or_path``: a path, or a bare name of a shipped file.

    Without ``near``, an existing file is used as it is. With ``near`` (the folder of the
    file that names this one), a path is relative to ``near`` and a bare name is first
    ``<near>/<name>.yaml``. A bare name then falls back to the shipped ``kind``. Raises
    `ConfigError` naming what was looked for and the shipped names.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    noun = kind[:-1]
    if near is None and path.is_file():
        return path
    if not is_name(text):
        candidate = path if near is None else near / path
        if candidate.exists():  # the loader says what is wrong with anything but a file
            return candidate
        raise ConfigError([f"{candidate}: no such {noun} file"])
    if near is not None and (near / f"{text}.yaml").is_file():
        return near / f"{text}.yaml"
    shipped = folder(kind) / f"{text}.yaml"
    if shipped.is_file():
        return shipped
    known = ", ".join(names(kind)) or "none"
    where = f" next to {near}" if near is not None else ""
    raise ConfigError([f"{text}: no such {noun} file{where} (known {kind}: {known})"])
