#!/usr/bin/env python3
"""TensorBoard itself reads the trainer's event files (issue 13 item 1).

Loads every run folder under LOGDIR (a folder holding events.out.tfevents.* files, or output_dir/runs)
with tensorboard's EventAccumulator, prints each run's scalar tags with their steps and the text
tags, and exits 1 when an expected tag is missing or a scalar tag has fewer steps than asked for.

    python3 bench/tensorboard-check.py OUTPUT_DIR/runs [--steps N] [--evals M]
"""
import argparse
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TRAIN_TAGS = ["train/loss", "train/learning_rate", "train/grad_norm", "train/epoch"]
EVAL_TAGS = ["eval/loss"]
TEXT_TAGS = ["args/text_summary"]


def run_dirs(logdir):
    for root, _dirs, files in os.walk(logdir):
        if any(f.startswith("events.out.tfevents.") for f in files):
            yield root


def main():
    p = argparse.ArgumentParser()
    p.add_argument("logdir")
    p.add_argument("--steps", type=int, default=1, help="least logged steps expected per train/ tag")
    p.add_argument("--evals", type=int, default=0, help="least evaluations expected (0: eval/ tags optional)")
    a = p.parse_args()
    dirs = sorted(run_dirs(a.logdir))
    if not dirs:
        print(f"no events.out.tfevents.* under {a.logdir}")
        return 1
    problems = []
    for d in dirs:
        acc = EventAccumulator(d, size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        tags = acc.Tags()
        scalars = set(tags.get("scalars", []))
        tensors = set(tags.get("tensors", []))
        print(f"run {d}")
        for t in sorted(scalars):
            ev = acc.Scalars(t)
            steps = [e.step for e in ev]
            print(f"  scalar {t}: {len(ev)} points, steps {steps[:5]}{'…' if len(steps) > 5 else ''}, last {ev[-1].value:.6g}")
        for t in sorted(tensors):
            print(f"  tensor {t}: {len(acc.Tensors(t))} events")
        for t in TRAIN_TAGS:
            if t not in scalars:
                problems.append(f"{d}: scalar tag {t} missing")
            elif len(acc.Scalars(t)) < a.steps:
                problems.append(f"{d}: {t} has {len(acc.Scalars(t))} steps, expected at least {a.steps}")
        if a.evals > 0:
            for t in EVAL_TAGS:
                if t not in scalars:
                    problems.append(f"{d}: scalar tag {t} missing")
                elif len(acc.Scalars(t)) < a.evals:
                    problems.append(f"{d}: {t} has {len(acc.Scalars(t))} points, expected at least {a.evals}")
        for t in TEXT_TAGS:
            if t not in tensors:
                problems.append(f"{d}: text tag {t} missing (tensors: {sorted(tensors)})")
    for line in problems:
        print(f"MISSING {line}")
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
