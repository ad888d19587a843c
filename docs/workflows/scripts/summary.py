"""The learning rates ranked by accuracy, the best first."""

import argparse

parser = argparse.ArgumentParser()
parser.add_argument("scores", nargs="+")
parser.add_argument("--out", required=True)
args = parser.parse_args()

scores = []
for path in args.scores:
    with open(path) as score:
        lr, accuracy = score.read().split()
        scores.append((float(accuracy), lr))
with open(args.out, "w") as out:
    for accuracy, lr in sorted(scores, reverse=True):
        out.write(f"lr={lr} accuracy={accuracy:.4f}\n")
