"""Finding and loading site files."""

from __future__ import annotations

from pathlib import Path

from rig.config import shipped
from rig.config.loader import load_model
from twin.site import Site

SITES_DIR = shipped.folder("sites")  # the shipped sites (package data)


def site_path(name_or_path: str | Path, *, near: Path | None = None) -> Path:
    """A site file from a path, or from a bare name of a shipped site.

    ``near`` is the folder of a scenario naming the site: a path is then relative to it,
    and a bare name is first a site file next to the scenario. Raises `ConfigError`.
    """
    return shipped.resolve(name_or_path, "sites", near=near)


def site_names() -> list[str]:
    """The names of the shipped sites."""
    return shipped.names("sites")


def load_site(name_or_path: str | Path) -> Site:
    """Load and validate a site description; raises ConfigError with every problem."""
    return load_model(site_path(name_or_path), Site)
