"""Real short text that no one here wrote (used by the tests, the demo and the benchmarks): the one-line package descriptions of the Debian archive.

``apt-cache dumpavail`` lists every package apt knows (about 63k after ``apt-get update``); the dpkg status file
(the installed packages, a few hundred) is the fallback on a machine whose apt lists are empty. Each package gives
its name, section (without the archive area: ``contrib/net`` is ``net``), priority, installed size and the first
line of its description.
"""

import subprocess
from pathlib import Path

DPKG_STATUS = Path("/var/lib/dpkg/status")


def _stanzas(text):
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields and "Description" in fields:
            yield fields


def package_descriptions(min_packages=1000):
    """[(package, section, priority, installed_size or None, description)], one per package name, sorted by name."""
    try:
        text = subprocess.run(["apt-cache", "dumpavail"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    rows = {}
    for f in _stanzas(text):
        rows.setdefault(f["Package"], f)
    if len(rows) < min_packages:
        for f in _stanzas(DPKG_STATUS.read_text()):
            rows.setdefault(f["Package"], f)
    out = []
    for name in sorted(rows):
        f = rows[name]
        size = f.get("Installed-Size")
        out.append((name, f.get("Section", "unknown").rsplit("/", 1)[-1], f.get("Priority"),
                    int(size) if size and size.isdigit() else None, f["Description"]))
    return out


def load_packages(conn, table="packages", limit=None, sections=None):
    """Create ``table(id, package, section, priority, installed_size, description)`` from the descriptions.

    ``sections``: keep only these sections; ``limit``: the first ``limit`` of them in name order. Returns the rows.
    """
    rows = package_descriptions()
    if sections is not None:
        rows = [r for r in rows if r[1] in sections]
    if limit is not None:
        rows = rows[:limit]
    conn.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, package text, section text, priority text, "
                 "installed_size integer, description text)")
    with conn.cursor() as cur:
        with cur.copy(f"COPY {table} (id, package, section, priority, installed_size, description) FROM STDIN") as cp:
            for i, r in enumerate(rows, 1):
                cp.write_row((i, *r))
    return rows
