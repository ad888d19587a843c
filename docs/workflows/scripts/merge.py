"""The simulated samples in one file."""

import argparse

parser = argparse.ArgumentParser()
parser.add_argument("inputs", nargs="+")
parser.add_argument("--out", required=True)
args = parser.parse_args()

with open(args.out, "w") as out:
    for number, path in enumerate(args.inputs):
        with open(path) as sample:
            lines = sample.readlines()
        out.writelines(lines if number == 0 else lines[1:])
