"""What training and evaluation share: reading events, the model's prediction."""

import csv
import math


def events(path):
    with open(path, newline="") as data:
        return [(float(r["x1"]), float(r["x2"]), int(r["label"])) for r in csv.DictReader(data)]


def predict(weights, x1, x2):
    w0, w1, w2 = weights
    return 1 / (1 + math.exp(-(w0 + w1 * x1 + w2 * x2)))
