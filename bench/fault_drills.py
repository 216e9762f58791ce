"""Fault drills, exhaustively: a real `python train.py` SIGKILLed at every step and at every moment of
every checkpoint write, deletion and model-directory write, each resumed with
`--resume_from_checkpoint latest` and compared with an uninterrupted run.

tests/test_faults_training.py runs one chain of these moments in CI; this runs each one on its own,
from a fresh start (30 cases, two processes each: several minutes on 2 cores).

    python bench/fault_drills.py                        # every case; prints one JSON object
    python bench/fault_drills.py --kinds checkpoint,commit --json-out docs/data/fault_drills.json

Cases (12 steps: 2 epochs x 6, checkpoints every 2 steps, the newest 2 kept):
    step:N        killed at the start of optimizer step N, N = 1..12
    checkpoint:N  killed inside the write of checkpoint N (weights torn, the rest unwritten), N = 2..12
    commit:N      killed with checkpoint N written completely but not yet published, N = 2..12
    prune:K       killed halfway through deleting the K-th pruned checkpoint, K = 1..4
    model_dir:1   killed with the model directory assembled but not renamed
    vocabulary:1  killed with the from-scratch vocab.txt written, the tokenizer's other files not yet
A case passes when every checkpoint `latest` could pick loads completely, no model directory exists
after the kill, and the resumed run's weights (1e-6), metrics and evaluation history equal the
uninterrupted run's.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

from json_out import add_json_out_argument, write_json_out  # bench/ is sys.path[0] when run as a script

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from conftest import (  # noqa: E402  (the tests' own process drivers and checks)
    FAULT_RUN_OPTIONS, assert_every_listed_checkpoint_loads, assert_same_run, kill_at, resumed_from, run_to_end,
    tiny_args, topic_rows, write_training_csv,
)

KINDS = {
    "step": [f"step:{n}" for n in range(1, 13)],
    "checkpoint": [f"checkpoint:{n}" for n in range(2, 13, 2)],
    "commit": [f"commit:{n}" for n in range(2, 13, 2)],
    "prune": [f"prune:{k}" for k in range(1, 5)],
    "model_dir": ["model_dir:1"],
    "vocabulary": ["vocabulary:1"],
}


def run_case(fault: str, data: Path, reference: Path, work: Path) -> dict:
    """Kill a fresh run at `fault`, check what is left, resume with `latest`, compare; returns the record."""
    output_dir = work / "model"
    root = Path(f"{output_dir}.checkpoints")
    fresh = tiny_args(data, output_dir=str(output_dir), **FAULT_RUN_OPTIONS)
    record = {"case": fault, "passed": False}
    try:
        kill_at(fresh, fault, work)
        assert not output_dir.exists(), "a model directory exists after the kill"
        listed = assert_every_listed_checkpoint_loads(root)
        record["latest_after_kill"] = listed[-1] if listed else None
        code, output = run_to_end(fresh + ["--resume_from_checkpoint", "latest"], work, "resume")
        assert code == 0, output[-3000:]
        record["resumed_from"] = resumed_from(output) if listed else None
        assert_same_run(output_dir, reference)
        record["passed"] = True
    except (Exception, AssertionError) as err:  # noqa: BLE001 - a failed case is a result, not a crash
        record["failure"] = f"{type(err).__name__}: {str(err)[:2000]}"
    except BaseException as err:  # pytest.fail's Failed derives from BaseException
        if isinstance(err, KeyboardInterrupt):
            raise
        record["failure"] = f"{type(err).__name__}: {str(err)[:2000]}"
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    add_json_out_argument(parser)
    args = parser.parse_args()
    # The training processes run in sessions of their own; a terminated drill must still end them
    # (kill_at's cleanup runs when SIGTERM becomes an exception here).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cases = [case for kind in args.kinds.split(",") for case in KINDS[kind]]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jbert-fault-drills-") as scratch:
        scratch = Path(scratch)
        write_training_csv(scratch / "train.csv", topic_rows(48, seed=1))
        write_training_csv(scratch / "valid.csv", topic_rows(10, seed=2))
        reference = scratch / "reference"
        code, output = run_to_end(tiny_args(scratch, output_dir=str(reference), **FAULT_RUN_OPTIONS), scratch, "reference")
        if code != 0:
            raise SystemExit(f"the uninterrupted reference run failed:\n{output[-3000:]}")
        records = []
        for i, fault in enumerate(cases):
            work = scratch / f"case-{i:02d}"
            work.mkdir()
            records.append(run_case(fault, scratch, reference, work))
            print(f"{fault}: {'ok' if records[-1]['passed'] else 'FAILED ' + records[-1]['failure'][:300]}",
                  file=sys.stderr, flush=True)
    result = {
        "benchmark": "fault_drills",
        "cases": len(records),
        "failures": sum(not r["passed"] for r in records),
        "by_kind": {kind: {"cases": sum(r["case"].startswith(kind + ":") for r in records),
                           "failures": sum(r["case"].startswith(kind + ":") and not r["passed"] for r in records)}
                    for kind in args.kinds.split(",")},
        "seconds": round(time.perf_counter() - started, 1),
        "records": records,
    }
    print(json.dumps(result, ensure_ascii=False, indent=2))
    write_json_out(args.json_out, "fault_drills", result)


if __name__ == "__main__":
    main()
