"""Simulated events: two features and a label, the label drawn from a known logistic law."""

import argparse
import csv
import math
import random

parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int, required=True)
parser.add_argument("--events", type=int, default=1000)
parser.add_argument("--out", required=True)
args = parser.parse_args()

rng = random.Random(args.seed)
with open(args.out, "w", newline="") as out:
    writer = csv.writer(out)
    writer.writerow(["x1", "x2", "label"])
    for _ in range(args.events):
        x1, x2 = rng.gauss(0, 1), rng.gauss(0, 1)
        label = int(rng.random() < 1 / (1 + math.exp(-(2 * x1 - x2))))
        writer.writerow([f"{x1:.5f}", f"{x2:.5f}", label])
