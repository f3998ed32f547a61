"""Packaging: one version everywhere, and a PGXN distribution that builds and installs on its own."""

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
    provided = meta["provides"]["ml_stack"]
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
