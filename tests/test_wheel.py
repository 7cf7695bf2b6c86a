"""heatrig installs like a package: a wheel in a fresh virtual environment finds its data.

The slow tests build the wheel from a copy of the tree, install it (not editable) into a
plain virtual environment outside the repository and run the installed ``heatrig`` from a
folder outside the repository. The dependencies are the distributions this test runs
with, linked (or copied) file by file from their RECORD into the fresh environment, so
nothing is downloaded but the build backend and the new environment never sees the
repository (no ``.pth`` file, no ``--system-site-packages``).
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

import pytest

from rig.config import shipped
from rig.config.sites import SITES_DIR
from twin.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
DATA_PACKAGES: dict[str, str] = SETUPTOOLS["package-dir"]
TOP_NOT_SOURCES = {".git", ".venv", "runs", "build", "dist"}  # only at the top: rig/build is code
NOT_SOURCES = shutil.ignore_patterns("*.egg-info", "__pycache__", ".*_cache")


def _not_sources(folder: str, names: list[str]) -> set[str]:
    """What the copy of the tree leaves out: git, venv, runs, build leftovers, caches."""
    top = TOP_NOT_SOURCES & set(names) if Path(folder) == REPO else set()
    return top | NOT_SOURCES(folder, names)


# --------------------------------------------------------------------------- configuration

def test_every_package_of_the_tree_is_listed_for_the_wheel() -> None:
    on_disk = {".".join(init.parent.relative_to(REPO).parts)
               for top in ("twin", "rig") for init in (REPO / top).rglob("__init__.py")}
    listed = set(SETUPTOOLS["packages"])
    assert not on_disk - listed, ("packages missing from [tool.setuptools] packages in "
                                  f"pyproject.toml: {sorted(on_disk - listed)}")
    assert listed - on_disk == set(DATA_PACKAGES), "listed packages that do not exist"


def test_data_packages_are_the_repository_folders_and_ship_every_file() -> None:
    assert set(shipped.PACKAGES.values()) == set(DATA_PACKAGES)
    for package, folder in DATA_PACKAGES.items():
        assert resources.files(package) == REPO / folder  # the editable install maps them
        patterns = SETUPTOOLS["package-data"][package]
        files = [p.name for p in (REPO / folder).iterdir()
                 if p.is_file() and p.name != "__init__.py"]
        assert files
        unshipped = [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)]
        assert not unshipped, f"{folder}: not covered by package-data {patterns}"
    assert SITES_DIR == REPO / "sites"
    assert shipped.folder("dashboards") == REPO / "grafana" / "dashboards"


def test_names_resolve_to_shipped_files_and_paths_are_used_as_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert shipped.resolve("cdu-leak", "scenarios") == REPO / "scenarios" / "cdu-leak.yaml"
    assert shipped.resolve("reference-1mw", "sites") == REPO / "sites" / "reference-1mw.yaml"
    mine = tmp_path / "reference-1mw"  # a file named like a shipped site is used as given
    mine.write_text("x: 1\n")
    assert shipped.resolve("reference-1mw", "sites") == Path("reference-1mw")
    (tmp_path / "local.yaml").write_text("x: 1\n")  # next to a scenario, a name is local
    assert shipped.resolve("local", "sites", near=tmp_path) == tmp_path / "local.yaml"
    assert shipped.resolve("campus-10mw", "sites", near=tmp_path) == SITES_DIR / "campus-10mw.yaml"
    with pytest.raises(ConfigError, match=r"^local: no such site file \(known sites: "
                       r"campus-10mw, ht-cascade-120, reference-1mw\)$"):
        shipped.resolve("local", "sites")
    with pytest.raises(ConfigError, match=r"^sites/x\.yaml: no such site file$"):
        shipped.resolve("sites/x.yaml", "sites")  # a path is never looked up by name


def test_check_help_names_the_shipped_examples(capsys: pytest.CaptureFixture[str]) -> None:
    from rig.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    examples = sorted(p.stem for p in (REPO / "scenarios").glob("*.yaml"))
    assert len(examples) > 5
    assert f"shipped example scenarios: {', '.join(examples)}" in text
    assert "the name of a shipped example" in text


# --------------------------------------------------------------------------- the wheel

@dataclass(frozen=True)
class Installed:
    """A fresh virtual environment with the heatrig wheel installed."""

    wheel: Path
    venv: Path
    work: Path  # an empty folder outside the repository, the cwd of every command
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``args`` (a program of the environment's bin/ first) in ``work``."""
        program = self.venv / "bin" / args[0]
        return subprocess.run([str(program), *args[1:]], cwd=self.work, env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)


def _distributions(name: str) -> list[metadata.Distribution]:
    """``name``'s installed dependencies, recursively (those installed here; not itself)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [req for req in metadata.requires(name) or [] if "extra ==" not in req]
    while todo:
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", todo.pop())
        assert match is not None
        key = re.sub(r"[-_.]+", "-", match.group()).lower()
        if key in seen:
            continue
        try:
            dist = metadata.distribution(key)
        except metadata.PackageNotFoundError:  # a requirement for another platform
            continue
        seen[key] = dist
        todo += [req for req in dist.requires or [] if "extra ==" not in req]
    return list(seen.values())


def _link_distribution(dist: metadata.Distribution, site_packages: Path) -> None:
    """Put the files of an installed distribution into another site-packages."""
    for file in dist.files or []:
        if file.parts[0] == "..":  # scripts and data outside site-packages
            continue
        source = Path(str(dist.locate_file(file)))
        if not source.is_file():
            continue
        target = site_packages / file
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:  # another file system
            shutil.copy2(source, target)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel, create a plain venv outside the repository and install it there."""
    root = tmp_path_factory.mktemp("wheel")
    assert not root.resolve().is_relative_to(REPO)
    source, dist, venv, work = root / "src", root / "dist", root / "venv", root / "work"
    shutil.copytree(REPO, source, ignore=_not_sources)  # no build/ leftovers in the wheel
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                            "-w", str(dist), str(source)],
                           capture_output=True, text=True, timeout=180, check=False)
    assert build.returncode == 0, build.stderr
    [wheel] = dist.glob("heatrig-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    python = venv / "bin" / "python"
    site_packages = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip())
    for dependency in _distributions("heatrig"):
        _link_distribution(dependency, site_packages)
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    install = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--quiet",
                              str(wheel)], capture_output=True, text=True, timeout=120,
                             check=False)
    assert install.returncode == 0, install.stderr
    checked = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=60,
                             check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr  # every requirement met
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return Installed(wheel, venv, work, env)


@pytest.mark.slow
def test_wheel_holds_every_module_and_every_shipped_file(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    modules = {str(p.relative_to(REPO)) for top in ("twin", "rig")
               for p in (REPO / top).rglob("*.py")}
    assert not modules - names, sorted(modules - names)
    for package, folder in DATA_PACKAGES.items():
        prefix = package.replace(".", "/")
        for path in (REPO / folder).iterdir():
            if path.is_file():
                assert f"{prefix}/{path.name}" in names, path
    assert {f"twin/data/{p.name}" for p in (REPO / "twin" / "data").glob("*.npz")} <= names
    assert not any(name.startswith(("tests/", "bench/", "tools/")) for name in names)


@pytest.mark.slow
def test_installed_package_uses_its_own_files(installed: Installed) -> None:
    probe = installed.run("python", "-c", """if True:
        import json, sys
        from importlib import metadata
        import rig, rig.cli, twin, twin.refrigerant
        from rig.config import shipped
        from rig.present.grafana import DASHBOARD_DIR
        dist = metadata.distribution("heatrig")
        print(json.dumps({
            "modules": [rig.__file__, rig.cli.__file__, twin.__file__,
                        twin.refrigerant.__file__],
            "data": [str(shipped.folder(k)) for k in ("sites", "scenarios", "dashboards")],
            "dashboards": str(DASHBOARD_DIR),
            "direct_url": dist.read_text("direct_url.json"),
            "sys_path": sys.path}))""")
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    venv = installed.venv.resolve()
    for path in [*found["modules"], *found["data"], found["dashboards"]]:
        assert Path(path).resolve().is_relative_to(venv), path
        assert not Path(path).resolve().is_relative_to(REPO), path
    assert found["dashboards"] == found["data"][2]
    assert not any(str(REPO) in entry for entry in found["sys_path"])
    assert '"editable": true' not in (found["direct_url"] or "")


@pytest.mark.slow
def test_installed_sim_runs_a_shipped_site_by_name(installed: Installed) -> None:
    t0 = time.perf_counter()
    result = installed.run("heatrig", "sim", "reference-1mw", "--duration", "1h",
                           "--out", "day", "--quiet", timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads((installed.work / "day" / "summary.json").read_text())
    kpis = summary["kpis"]
    assert 1.0 < kpis["pue"] < 2.0
    assert kpis["it_energy_kwh"] > 0
    assert "pue" in result.stdout.lower()
    assert time.perf_counter() - t0 < 60


@pytest.mark.slow
def test_installed_check_validates_a_shipped_scenario_by_path_and_by_name(
        installed: Installed) -> None:
    folder = installed.run("python", "-c", "from rig.config import shipped; "
                           "print(shipped.folder('scenarios'))")
    assert folder.returncode == 0, folder.stderr
    path = Path(folder.stdout.strip()) / "cdu-leak.yaml"
    assert path.resolve().is_relative_to(installed.venv.resolve())
    by_path = installed.run("heatrig", "check", str(path))
    assert by_path.returncode == 0, by_path.stderr
    assert by_path.stdout.startswith(f"{path}: ok (cdu-leak:")
    by_name = installed.run("heatrig", "check", "cdu-leak", "heat-wave")
    assert by_name.returncode == 0, by_name.stderr
    assert [line.split(":")[0] for line in by_name.stdout.splitlines()] == ["cdu-leak",
                                                                              "heat-wave"]
    unknown = installed.run("heatrig", "check", "cdu-leek")
    assert unknown.returncode == 2
    assert "known scenarios:" in unknown.stderr and "cdu-leak" in unknown.stderr
    assert "Traceback" not in unknown.stderr


@pytest.mark.slow
def test_installed_points_equal_the_repository_points(installed: Installed) -> None:
    result = installed.run("heatrig", "points", "reference-1mw", "--format", "csv")
    assert result.returncode == 0, result.stderr
    here = subprocess.run([sys.executable, "-m", "rig.cli", "points", "reference-1mw",
                           "--format", "csv"], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=False)
    assert here.returncode == 0, here.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) > 100
    assert result.stdout == here.stdout
