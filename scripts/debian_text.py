"""Real short text that no one here wrote (used by the tests, the demo and the benchmarks): the one-line package descriptions of the Debian archive.

The rows come from ``data/debian-packages.tsv.xz``, a snapshot of Debian 12's package lists (bookworm, -updates
and -security, amd64, 63,681 packages) taken on 2026-12-02 with ``python3 scripts/debian_text.py --refresh``.
A snapshot, not the machine's own apt lists, because the lists change with every ``apt-get update``: the tests'
data (and the figures in the docs) must be the same on every machine. Each package gives its name, section
(without the archive area: ``contrib/net`` is ``net``), priority, installed size and the first line of its
description.
"""

import csv
import io
import lzma
import subprocess
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).resolve().parent.parent / "data" / "debian-packages.tsv.xz"


def _stanzas(text):
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields and "Description" in fields:
            yield fields


def apt_descriptions():
    """The same rows from this machine's apt lists (``apt-cache dumpavail``), one per package name, by name."""
    text = subprocess.run(["apt-cache", "dumpavail"], check=True, capture_output=True, text=True).stdout
    rows = {}
    for f in _stanzas(text):
        rows.setdefault(f["Package"], f)
    out = []
    for name in sorted(rows):
        f = rows[name]
        size = f.get("Installed-Size")
        out.append((name, f.get("Section", "unknown").rsplit("/", 1)[-1], f.get("Priority"),
                    int(size) if size and size.isdigit() else None, f["Description"]))
    return out


def package_descriptions():
    """[(package, section, priority, installed_size or None, description)] from the snapshot, sorted by name."""
    with lzma.open(SNAPSHOT, "rt", encoding="utf-8", newline="") as f:
        return [(name, section, priority or None, int(size) if size else None, description)
                for name, section, priority, size, description in csv.reader(f, delimiter="\t")]


def write_snapshot(rows, path=SNAPSHOT):
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    for name, section, priority, size, description in rows:
        writer.writerow((name, section, priority or "", "" if size is None else size, description))
    path.parent.mkdir(exist_ok=True)
    with lzma.open(path, "wt", encoding="utf-8", newline="", preset=9) as f:
        f.write(buf.getvalue())


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


if __name__ == "__main__":
    if sys.argv[1:] != ["--refresh"]:
        sys.exit("usage: python3 scripts/debian_text.py --refresh   (rewrites data/debian-packages.tsv.xz from apt-cache)")
    fresh = apt_descriptions()
    write_snapshot(fresh)
    print(f"{len(fresh)} packages written to {SNAPSHOT}")
