"""Packaging: one version everywhere, and a PGXN distribution that builds and installs on its own."""

import hashlib
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The bundle's extensions, each with its control file control/<name>.control (the Makefile's EXTENSIONS).
EXTENSIONS = ("ml_stack", "ml_stack_python", "ml_stack_pgml", "ml_stack_vectorize")


def control_version(extension: str = "ml_stack") -> str:
    text = (REPO / "control" / f"{extension}.control").read_text()
    return re.search(r"^default_version\s*=\s*'([^']+)'", text, re.M).group(1)


def test_the_bundle_has_exactly_these_control_files():
    """A third extension would go unchecked by the tests below: they iterate over EXTENSIONS."""
    assert sorted(p.name for p in (REPO / "control").glob("*.control")) == sorted(f"{e}.control" for e in EXTENSIONS)


def test_meta_json_matches_the_control_file():
    meta = json.loads((REPO / "META.json").read_text())
    version = control_version()
    assert meta["version"] == version
    assert sorted(meta["provides"]) == sorted(EXTENSIONS)
    for extension in EXTENSIONS:
        provided = meta["provides"][extension]
        assert provided["version"] == control_version(extension), extension
        assert provided["file"] == f"extension/{extension}--{control_version(extension)}.sql"
        assert (REPO / provided["file"]).is_file(), provided["file"]
        assert (REPO / provided["docfile"]).is_file(), provided["docfile"]
    assert meta["meta-spec"]["version"] == "1.0.0"


def test_make_dist_builds_and_installs_from_the_zip(tmp_path):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("make dist archives the git HEAD; this is not a git checkout")
    version = control_version()
    python_version = control_version("ml_stack_python")
    # `make dist` archives HEAD; run it on a clone so the working tree's state does not matter
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run(["make", "-s", "dist"], cwd=clone, check=True, capture_output=True)
    archive = clone / f"ml_stack-{version}.zip"
    prefix = f"ml_stack-{version}/"
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        for needed in ("Makefile", "META.json", "control/ml_stack.control", f"extension/ml_stack--{version}.sql",
                       "control/ml_stack_python.control", f"extension/ml_stack_python--{python_version}.sql",
                       "python/ml_stack_python/__init__.py"):
            assert prefix + needed in names, needed
        # the Python package whole: the build embeds every module into the install script
        package = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "python" / "ml_stack_python").glob("*.py"))
        assert package and {prefix + p for p in package} <= names
        shipped_script = z.read(f"{prefix}extension/ml_stack--{version}.sql")
        shipped_python_script = z.read(f"{prefix}extension/ml_stack_python--{python_version}.sql")
        z.extractall(tmp_path / "unpacked")
    # what `pgxn install` does: make, then make install (here into a staging directory)
    src = tmp_path / "unpacked" / f"ml_stack-{version}"
    stage = tmp_path / "stage"
    subprocess.run(["make", "-s"], cwd=src, check=True, capture_output=True)
    subprocess.run(["make", "-s", "install", f"DESTDIR={stage}"], cwd=src, check=True, capture_output=True)
    installed = {p.name for p in stage.rglob("*") if p.is_file()}
    assert {"ml_stack.control", f"ml_stack--{version}.sql",
            "ml_stack_python.control", f"ml_stack_python--{python_version}.sql"} <= installed
    # make may rebuild the scripts (unzipped timestamps): from the shipped sources they are the shipped scripts
    assert (src / "extension" / f"ml_stack--{version}.sql").read_bytes() == shipped_script
    assert (src / "extension" / f"ml_stack_python--{python_version}.sql").read_bytes() == shipped_python_script


def released_scripts(extension: str, current: str, names) -> list[str]:
    """Which of the file ``names`` are scripts of released versions of ``extension``: every install or upgrade
    script of it but the current version's install script and the upgrade scripts into the current version."""
    return sorted(n for n in names
                  if re.fullmatch(rf"{re.escape(extension)}--[^-].*\.sql", n)
                  and n != f"{extension}--{current}.sql" and not n.endswith(f"--{current}.sql"))


def test_released_scripts_selection():
    """The selection, on names of a later release than the repository has: each extension's own scripts only
    (``ml_stack--*`` must not take ``ml_stack_python--*``), the version being developed left out."""
    names = ["ml_stack--0.1.0.sql", "ml_stack--0.2.0.sql", "ml_stack--0.1.0--0.2.0.sql", "ml_stack--0.3.0.sql",
             "ml_stack--0.2.0--0.3.0.sql", "ml_stack_python--0.2.0.sql", "ml_stack_python--0.3.0.sql",
             "ml_stack_python--0.2.0--0.3.0.sql", "released.sha256"]
    assert released_scripts("ml_stack", "0.3.0", names) == \
        ["ml_stack--0.1.0--0.2.0.sql", "ml_stack--0.1.0.sql", "ml_stack--0.2.0.sql"]
    assert released_scripts("ml_stack_python", "0.3.0", names) == ["ml_stack_python--0.2.0.sql"]
    assert released_scripts("ml_stack_python", "0.2.0", ["ml_stack--0.1.0.sql", "ml_stack_python--0.2.0.sql"]) == []


def test_released_scripts_are_never_edited():
    """Extensions are forever: every install or upgrade script of a released version of either extension is
    recorded in extension/released.sha256 when released, and must stay byte for byte what was released. A new
    version's scripts join the list when that version is released."""
    recorded = {}
    for line in (REPO / "extension" / "released.sha256").read_text().splitlines():
        digest, name = line.split()
        recorded[name] = digest
    names = [p.name for p in (REPO / "extension").iterdir()]
    for extension in EXTENSIONS:
        for name in released_scripts(extension, control_version(extension), names):
            assert name in recorded, f"{name} belongs to a released version: record it in released.sha256"
    for name, digest in recorded.items():
        actual = hashlib.sha256((REPO / "extension" / name).read_bytes()).hexdigest()
        assert actual == digest, f"{name} was released and must not change (sha256 {actual} != {digest})"
