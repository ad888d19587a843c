"""A logistic regression by gradient descent (a stand-in for a real GPU training script: with
PyTorch, the job's GPU is visible as cuda:0)."""

import argparse
import json

from common import events, predict

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--data", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--epochs", type=int, default=20)
args = parser.parse_args()

rows = events(args.data)
weights = [0.0, 0.0, 0.0]
for _ in range(args.epochs):
    grad = [0.0, 0.0, 0.0]
    for x1, x2, label in rows:
        error = predict(weights, x1, x2) - label
        for i, x in enumerate((1.0, x1, x2)):
            grad[i] += error * x / len(rows)
    weights = [w - args.lr * g for w, g in zip(weights, grad, strict=True)]
with open(args.out, "w") as out:
    json.dump({"lr": args.lr, "weights": weights}, out)
