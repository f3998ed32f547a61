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


def control_version() -> str:
    text = (REPO / "control" / "ml_stack.control").read_text()
    return re.search(r"^default_version\s*=\s*'([^']+)'", text, re.M).group(1)


def test_meta_json_matches_the_control_file():
    meta = json.loads((REPO / "META.json").read_text())
    version = control_version()
    assert meta["version"] == version
    provided = meta["provides"]["ml_stack"]  # ml_stack_python: same version, checked in test_python_engine
    assert provided["version"] == version
    assert (REPO / provided["file"]).is_file()
    assert meta["meta-spec"]["version"] == "1.0.0"


def test_make_dist_builds_and_installs_from_the_zip(tmp_path):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("make dist archives the git HEAD; this is not a git checkout")
    version = control_version()
    # `make dist` archives HEAD; run it on a clone so the working tree's state does not matter
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run(["make", "-s", "dist"], cwd=clone, check=True, capture_output=True)
    archive = clone / f"ml_stack-{version}.zip"
    prefix = f"ml_stack-{version}/"
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        for needed in ("Makefile", "META.json", "control/ml_stack.control", f"extension/ml_stack--{version}.sql"):
            assert prefix + needed in names
        shipped_script = z.read(f"{prefix}extension/ml_stack--{version}.sql")
        z.extractall(tmp_path / "unpacked")
    # what `pgxn install` does: make, then make install (here into a staging directory)
    src = tmp_path / "unpacked" / f"ml_stack-{version}"
    stage = tmp_path / "stage"
    subprocess.run(["make", "-s"], cwd=src, check=True, capture_output=True)
    subprocess.run(["make", "-s", "install", f"DESTDIR={stage}"], cwd=src, check=True, capture_output=True)
    installed = {p.name for p in stage.rglob("*") if p.is_file()}
    assert {"ml_stack.control", f"ml_stack--{version}.sql"} <= installed
    # make may rebuild the script (unzipped timestamps): from the shipped sources it is the shipped script
    assert (src / "extension" / f"ml_stack--{version}.sql").read_bytes() == shipped_script


def test_released_scripts_are_never_edited():
    """Extensions are forever: every install or upgrade script of a released version is recorded in
    extension/released.sha256 when released, and must stay byte for byte what was released. A new version's
    scripts join the list when that version is released."""
    recorded = {}
    for line in (REPO / "extension" / "released.sha256").read_text().splitlines():
        digest, name = line.split()
        recorded[name] = digest
    current = f"ml_stack--{control_version()}.sql"
    for script in sorted((REPO / "extension").glob("ml_stack--*.sql")):
        if script.name == current or script.name.endswith(f"--{control_version()}.sql"):
            continue  # the version being developed (its install script and the upgrade scripts into it)
        assert script.name in recorded, f"{script.name} belongs to a released version: record it in released.sha256"
    for name, digest in recorded.items():
        actual = hashlib.sha256((REPO / "extension" / name).read_bytes()).hexdigest()
        assert actual == digest, f"{name} was released and must not change (sha256 {actual} != {digest})"
