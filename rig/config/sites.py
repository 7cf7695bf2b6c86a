"""Finding and loading site files."""

from __future__ import annotations

from pathlib import Path

from rig.config.loader import load_model
from twin.errors import ConfigError
from twin.site import Site

SITES_DIR = Path(__file__).resolve().parents[2] / "sites"


def site_path(name_or_path: str | Path) -> Path:
    """A site file from a path, or from a bare name looked up in ``sites/``."""
    path = Path(name_or_path)
    if path.exists():
        return path
    candidate = SITES_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = ", ".join(sorted(p.stem for p in SITES_DIR.glob("*.yaml"))) or "none"
    raise ConfigError([f"{name_or_path}: no such site file (known sites: {known})"])


def load_site(name_or_path: str | Path) -> Site:
    """Load and validate a site description; raises ConfigError with every problem."""
    return load_model(site_path(name_or_path), Site)
