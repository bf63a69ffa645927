"""Old against new: ``decnn eval-ood RUN -o fashion --limit L -n N`` with the straightforward ReDecNN sampler (kept
below as the reference) and with the suite's, side by side on one trained run.

Each measurement is one process running the whole evaluation (so its peak RSS is its own), and the variants take
turns round by round, so load drifting on a shared machine touches them alike. Printed per variant and N: CPU and
wall milliseconds per input (the whole evaluation, and the sampler alone), peak RSS, the ratios to the reference,
and whether the vote-entropy ROC-AUCs agree (the same draws give the same votes).

    python benchmarks/sampler.py RUN --data-root ../shared/data            # N = 32 and 128, 2,000 + 2,000 inputs
    python benchmarks/sampler.py RUN --data-root ../shared/data -n 128 --rounds 1 --variants reference,new
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's decnn_cli, not an installed one

# variant -> (sampler, evaluation precision; None: the run's own)
VARIANTS = {"reference": ("reference", None), "new": ("new", None), "new-bf16": ("new", "bf16")}


def child(variant: str, n: int, run: Path, data_root: Path | None, limit: int, outlier: str) -> None:
    """One evaluation in this process; prints one JSON line of what it cost."""
    import dataclasses

    from decnn_cli import methods
    from decnn_cli.experiments.ood import OODOptions, evaluate_ood
    from tests.test_uncertainty import straightforward_paths  # the sampler before chunks, the tests' reference

    sampler, precision = VARIANTS[variant]
    spec = methods.METHODS["redecnn"]
    inner = straightforward_paths if sampler == "reference" else spec.sample
    spent = [0.0]

    def timed(model, x, k, settings):
        start = time.process_time()
        try:
            return inner(model, x, k, settings)
        finally:
            spent[0] += time.process_time() - start

    methods.METHODS["redecnn"] = dataclasses.replace(spec, sample=timed)
    with tempfile.TemporaryDirectory() as results:
        options = OODOptions(
            results_dir=Path(results),
            data_root=data_root,
            device="cpu",
            precision=precision,
            show_progress=False,
            outliers=(outlier,),
            samples=n,
            limit=limit,
        )
        before, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        (row,) = [r for r in evaluate_ood([run], options) if r["outlier"] == outlier]
        wall = time.perf_counter() - wall
        after = resource.getrusage(resource.RUSAGE_SELF)
    inputs = row["inliers"] + row["outliers"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(
        json.dumps(
            {
                "variant": variant,
                "n": n,
                "inputs": inputs,
                "cpu_ms_per_input": 1000 * cpu / inputs,
                "wall_ms_per_input": 1000 * wall / inputs,
                "sampler_cpu_ms_per_input": 1000 * spent[0] / inputs,
                "page_faults": after.ru_minflt - before.ru_minflt,
                "peak_rss_mb": after.ru_maxrss / 1024,  # kB on Linux
                "auroc_vote_entropy": row["auroc_vote_entropy"],
                "auroc_predictive_entropy": row["auroc_predictive_entropy"],
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished ReDecNN run folder")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=2000, help="inliers and outliers each (eval-ood --limit)")
    parser.add_argument("--outlier", default="fashion")
    parser.add_argument("-n", "--samples", type=int, action="append", help="N (repeatable; default 32 and 128)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {list(VARIANTS)}")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.run, args.data_root, args.limit, args.outlier)
        return 0

    variants = args.variants.split(",")
    sizes = args.samples or [32, 128]
    root = ["--data-root", str(args.data_root)] if args.data_root else []
    common = [str(args.run), *root, "--limit", str(args.limit), "--outlier", args.outlier]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    here = Path(__file__).resolve()
    measured: dict[tuple[str, int], list[dict]] = {}
    for round_index in range(args.rounds):
        for n in sizes:
            for variant in variants:  # interleaved: each variant once per round and N
                done = subprocess.run(
                    [sys.executable, str(here), *common, "--child", variant, str(n)],
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=here.parent.parent,
                )
                if done.returncode != 0:
                    print(done.stderr[-3000:], file=sys.stderr)
                    return 1
                result = json.loads(done.stdout.strip().splitlines()[-1])
                measured.setdefault((variant, n), []).append(result)
                print(f"round {round_index + 1}: {json.dumps(result)}", flush=True)

    print(
        f"\n{args.limit} inliers + {args.limit} outliers ({args.outlier}), OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, "
        f"median of {args.rounds} round(s); ratios are reference / variant"
    )
    header = "variant     N    CPU ms/input  wall ms/input  sampler CPU ms/input  peak RSS MB  CPU ratio  wall ratio"
    print(header)
    for n in sizes:
        base = measured.get(("reference", n))
        for variant in variants:
            rows = measured[variant, n]
            cpu = statistics.median(r["cpu_ms_per_input"] for r in rows)
            wall = statistics.median(r["wall_ms_per_input"] for r in rows)
            sampler = statistics.median(r["sampler_cpu_ms_per_input"] for r in rows)
            rss = max(r["peak_rss_mb"] for r in rows)
            ratios = "        -           -"
            if base:
                cpu_ratio = statistics.median(r["cpu_ms_per_input"] for r in base) / cpu
                wall_ratio = statistics.median(r["wall_ms_per_input"] for r in base) / wall
                ratios = f"{cpu_ratio:9.2f}  {wall_ratio:10.2f}"
            print(f"{variant:10s} {n:4d} {cpu:13.2f} {wall:14.2f} {sampler:21.2f} {rss:12.0f}  {ratios}")
        aurocs = {v: measured[v, n][0]["auroc_vote_entropy"] for v in variants}
        print(f"  N = {n}: vote-entropy ROC-AUC per variant {aurocs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
