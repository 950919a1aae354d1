"""kill -9 harness for the real command line: ``wfexplain unlearn`` killed at random moments.

Each trial copies ``checkpoints/mnist-cnn`` into a scratch directory, runs a short
``wfexplain unlearn --out EXISTING --force`` (or, every other trial, an in-place
``unlearn --force``) and sends SIGKILL at a random moment in the second half of the run, where
the checkpoint is written; then the target must load (digests, headers, shapes) and be
either the old or the new checkpoint. Prints one line per trial and a JSON summary.

    .venv/bin/python perf/kill_unlearn.py [--trials 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import wfexplain
from wfexplain.checkpoint import file_sha256

SOURCE = Path("checkpoints/mnist-cnn")
RUN = ["--steps", "3", "--limit-train", "512", "--eval-limit", "100", "--force"]


def _cmd(src: Path, target: Path, in_place: bool) -> list[str]:
    exe = [sys.executable, "-m", "wfexplain", "unlearn"]
    return exe + (["--checkpoint", str(target)] if in_place else ["--checkpoint", str(src), "--out", str(target)]) + RUN


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    scratch = Path(tempfile.mkdtemp(prefix="wfx-kill-"))
    src = scratch / "src"
    shutil.copytree(SOURCE, src, ignore=shutil.ignore_patterns("retrain", "benchmark*"))
    start = time.perf_counter()  # one uninterrupted run: when does the write happen?
    target = scratch / "t"
    shutil.copytree(src, target)
    subprocess.run(_cmd(src, target, False), env=env, check=True, capture_output=True)
    full = time.perf_counter() - start
    outcomes = {"old": 0, "new": 0, "unloadable": 0}
    for trial in range(args.trials):
        in_place = trial % 2 == 1
        shutil.rmtree(target)
        shutil.copytree(src, target)
        old = file_sha256(target / "memory.safetensors")
        proc = subprocess.Popen(_cmd(src, target, in_place), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay = rng.uniform(0.4 * full, 1.0 * full)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        try:
            wfexplain.load(target)
            state = "old" if file_sha256(target / "memory.safetensors") == old else "new"
        except Exception as e:  # any failure to load is the outcome being counted
            state = "unloadable"
            print(f"  {e}", file=sys.stderr)
        outcomes[state] += 1
        print(f"trial {trial:2d} {'in place' if in_place else '--out   '} killed at {delay:5.2f} s: {state}")
    shutil.rmtree(scratch)
    print(json.dumps({"trials": args.trials, "uninterrupted_run_seconds": round(full, 2), **outcomes}))


if __name__ == "__main__":
    main()
