"""Compare a `decnn bench` table with the paper's Table 10 cost ratios; prints one verdict per ratio."""

from __future__ import annotations

import sys

import pandas as pd

# From the paper's Table 10 (MNIST, seconds per epoch): DecNN 80.5 / 13.6, ReDecNN 96.7 / 13.6, and
# ReDecNN / Ensemble 96.7 / 109.6.
TARGETS = {"decnn / standard": 5.9, "redecnn / standard": 7.1, "redecnn / ensemble": 0.9}


def main(path: str) -> int:
    frame = pd.read_csv(path)
    failed = 0
    if "precision" not in frame:  # tables written before bench measured bf16
        frame["precision"] = "fp32"
    for (device, decoder, precision), block in frame.groupby(["device", "decoder", "precision"]):
        step = block.set_index("method")["step_ms"]
        print(f"{device}, {decoder} decoder, {precision}")
        for name, target in TARGETS.items():
            top, bottom = (part.strip() for part in name.split("/"))
            if top not in step or bottom not in step:
                continue
            ratio = step[top] / step[bottom]
            ok = ratio <= target
            failed += not ok
            print(f"  {name:20s} {ratio:6.2f}  (paper {target:.2f})  {'at or below' if ok else 'ABOVE'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "results/bench.csv"))
