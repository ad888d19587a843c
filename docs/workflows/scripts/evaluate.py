"""A model's accuracy on the events."""

import argparse
import json

from common import events, predict

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--data", required=True)
parser.add_argument("--out", required=True)
args = parser.parse_args()

with open(args.model) as model_file:
    model = json.load(model_file)
rows = events(args.data)
right = sum((predict(model["weights"], x1, x2) > 0.5) == bool(label) for x1, x2, label in rows)
with open(args.out, "w") as out:
    out.write(f"{model['lr']} {right / len(rows):.4f}\n")
