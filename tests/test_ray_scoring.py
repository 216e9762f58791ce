"""The Ray engine on a REAL local Ray: row for row the local scorer's output, faults, cluster address, errors.

One Ray runtime for the whole module (`ray.init(num_cpus=2)`), and one `ray start --head`
cluster for the --address tests: Ray start-up takes many seconds on two cores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import PAIRS, REPO_ROOT, TEXTS

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from jbert.core.errors import UserError  # noqa: E402
from jbert.serve.scoring.options import ScoreOptions  # noqa: E402
from jbert.serve.scoring.run import score_file  # noqa: E402

SERVE = str(REPO_ROOT / "serve_onnx.py")


@pytest.fixture(scope="module")
def ray_runtime():
    """A local Ray with 2 CPUs for this module (the engine reuses a runtime it did not start)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def make_mixed_inputs(directory: Path, rows_per_file: int = 60) -> list[Path]:
    """A CSV, a JSON lines and a Parquet file, each with good rows and bad ones scattered through it."""
    directory.mkdir(parents=True, exist_ok=True)
    csv_lines = ["id,text,label"]
    jsonl_lines: list[bytes] = []
    parquet_rows = []
    for i in range(rows_per_file):
        text = TEXTS[i % len(TEXTS)] + "犬" * (i % 11)
        if i % 9 == 4:
            csv_lines.append(f"{i},,negative")                       # empty text
        elif i % 9 == 7:
            csv_lines.append(f"{i},{text},neutral,extra")            # too many cells
        elif i % 9 == 2:
            csv_lines.append(f'{i},"{text}\n二行目",positive')       # a cell over two lines
        else:
            csv_lines.append(f"{i},{text},positive")
        if i % 8 == 3:
            jsonl_lines.append(b"{not json")
        elif i % 8 == 5:
            jsonl_lines.append(json.dumps({"id": i, "text": i}).encode())  # not text
        elif i % 8 == 6:
            jsonl_lines.append(b'{"id": %d, "text": "\xff\xfe broken"}' % i)  # undecodable bytes
        else:
            jsonl_lines.append(json.dumps({"id": i, "text": text}, ensure_ascii=False).encode())
        parquet_rows.append({"id": i, "text": None if i % 7 == 1 else ("\u3000" if i % 7 == 2 else text)})
    paths = [directory / "a.csv", directory / "b.jsonl", directory / "c.parquet"]
    paths[0].write_text("\n".join(csv_lines) + "\n", encoding="utf-8")
    paths[1].write_bytes(b"\n".join(jsonl_lines) + b"\n")
    pq.write_table(pa.Table.from_pylist(parquet_rows), paths[2])
    return paths


def read_shards(directory: Path) -> list[dict]:
    """Every row of a shard directory, shards in name order."""
    rows = []
    for shard in sorted(directory.glob("part-*.parquet")):
        rows += pq.read_table(shard).to_pylist()
    return rows


def local_rows(export_dir, source: Path, output: Path, **overrides) -> list[dict]:
    """The single-file local scorer's output rows for one input file."""
    score_file(ScoreOptions(export_dir=str(export_dir), input=str(source), output=str(output), show_progress=False,
                            model="fp32", num_threads=1, **overrides))
    return [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]


def assert_same_rows(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    assert [r["error"] for r in got] == [r["error"] for r in expected]
    assert [r["predicted_label"] for r in got] == [r["predicted_label"] for r in expected]
    np.testing.assert_allclose([r["predicted_score"] or np.nan for r in got],
                               [r["predicted_score"] or np.nan for r in expected], atol=1e-6)


def test_ray_equals_local_scorer_row_for_row(tmp_path, export_dir, ray_runtime):
    inputs = make_mixed_inputs(tmp_path / "in")
    output = tmp_path / "scored"
    summary = score_file(ScoreOptions(
        export_dir=str(export_dir), input=str(tmp_path / "in" / "*"), output=str(output), engine="ray",
        model="fp32", num_workers=2, num_threads=1, chunk_size=16, batch_size=4, show_progress=False,
    ))
    rows = read_shards(output)
    manifest = json.loads((output / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["rows_in"] == manifest["rows_out"] == len(rows) == summary.rows == 180
    assert [i["file"] for i in manifest["inputs"]] == [str(p) for p in inputs]
    assert manifest["model_file"] == "model.onnx" and manifest["engine"] == "ray" and manifest["workers"] == 2
    # Shards in name order are the input order: file by file, record by record.
    assert [(r["source_file"], r["source_row"]) for r in rows] == [
        (str(p), n) for p in inputs for n in range(1, 61)
    ]
    errors = 0
    for source in inputs:
        expected = local_rows(export_dir, source, tmp_path / f"{source.name}.jsonl", chunk_size=16, batch_size=4)
        got = [r for r in rows if r["source_file"] == str(source)]
        assert_same_rows(got, expected)
        # Input columns come through; a JSON value that is not text is kept as its JSON text.
        assert [g["text"] for g, e in zip(got, expected) if isinstance(e.get("text"), str)] == [
            e["text"] for e in expected if isinstance(e.get("text"), str)]
        errors += sum(r["error"] is not None for r in expected)
    assert 0 < errors == manifest["rows_with_errors"] == summary.errors
    assert any("column 'text' must be a string, got int" in (r["error"] or "") for r in rows)
    assert any("not valid JSON" in (r["error"] or "") for r in rows)
    assert any("4 cells but the header has 3" in (r["error"] or "") for r in rows)

    # The local engine writes the same shard directory.
    local_dir = tmp_path / "scored-local"
    score_file(ScoreOptions(export_dir=str(export_dir), input=str(tmp_path / "in"), output=str(local_dir),
                            model="fp32", num_threads=1, chunk_size=16, batch_size=4, show_progress=False))
    assert_same_rows(read_shards(local_dir), rows)


def test_score_dataset_from_python(export_dir, classifier, ray_runtime):
    from jbert.serve.scoring.ray_engine import score_dataset

    texts = TEXTS + ["", "猫が寝る"]
    dataset = ray.data.from_items([{"review_id": i, "text": t} for i, t in enumerate(texts)])
    scored = score_dataset(dataset, export_dir, model="fp32", num_workers=1, all_scores=True).take_all()
    scored.sort(key=lambda r: r["review_id"])
    expected = classifier.predict([t for t in texts if t])
    good = [r for r in scored if r["error"] is None]
    assert [r["predicted_label"] for r in good] == [e["label"] for e in expected]
    np.testing.assert_allclose([r["predicted_score"] for r in good], [e["score"] for e in expected], atol=1e-6)
    assert set(good[0]["scores"]) == set(classifier.labels)
    assert scored[len(TEXTS)]["error"] == "column 'text' is empty" and scored[len(TEXTS)]["predicted_label"] is None


def _descendants_named(fragment: str) -> list:
    """This test process's descendants (the Ray it started) whose command line holds `fragment`."""
    import psutil

    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE and fragment in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:  # ended while we looked
            pass
    return found


# Enough rows that the run outlasts the kill on a quiet machine too (a tiny model scores thousands of
# rows a second per actor).
ROWS_PER_KILL_FILE = 8000


def test_killed_worker_still_scores_every_row_once(tmp_path, export_dir, ray_runtime):
    # Several files: a Ray block (one actor call) holds a whole small file, so both actors get work.
    source = tmp_path / "many"
    source.mkdir()
    for part in range(8):
        with open(source / f"part-{part}.jsonl", "w", encoding="utf-8") as handle:
            for i in range(part * ROWS_PER_KILL_FILE, (part + 1) * ROWS_PER_KILL_FILE):
                handle.write(json.dumps({"id": i, "text": TEXTS[i % len(TEXTS)] + "犬" * (i % 13)}, ensure_ascii=False) + "\n")
    output = tmp_path / "scored"
    outcome = {}

    def run():
        try:
            outcome["summary"] = score_file(ScoreOptions(
                export_dir=str(export_dir), input=str(source), output=str(output), engine="ray", model="fp32",
                num_workers=2, num_threads=1, chunk_size=256, show_progress=False,
            ))
        except BaseException as err:  # reported by the assertions below
            outcome["error"] = err

    import psutil

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + 180
    victim, both_seen = None, None
    while runner.is_alive() and time.monotonic() < deadline and victim is None:
        actors = _descendants_named("ScoreBatches")
        if len(actors) >= 2 and both_seen is None:
            both_seen = time.monotonic()
        if both_seen is not None and time.monotonic() - both_seen > 0.5 and actors:  # both have taken batches
            try:
                actors[0].send_signal(signal.SIGKILL)  # psutil refuses a pid that was reused meanwhile
                victim = actors[0]
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.2)
    assert victim is not None, "no scoring actor was killed: the run ended first (give it more rows) or never started"
    assert runner.is_alive(), "the run finished before a worker could be killed: give it more rows"
    runner.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    rows = read_shards(output)
    ids = [r["id"] for r in rows]
    assert sorted(ids) == list(range(8 * ROWS_PER_KILL_FILE)), "a row was lost or written twice"
    assert ids == list(range(8 * ROWS_PER_KILL_FILE)) and [r["source_row"] for r in rows] == list(range(1, ROWS_PER_KILL_FILE + 1)) * 8
    manifest = json.loads((output / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["rows_in"] == manifest["rows_out"] == 8 * ROWS_PER_KILL_FILE and manifest["rows_with_errors"] == 0
    assert not victim.is_running() or victim.status() == psutil.STATUS_ZOMBIE


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def head_address(tmp_path_factory):
    """A `ray start --head` cluster in a subprocess; its processes are ended by pid afterwards."""
    import psutil

    port = _free_port()
    temp_dir = tmp_path_factory.mktemp("ray-head")
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", f"--temp-dir={temp_dir}", "--block", "--disable-usage-stats"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert head.poll() is None, head.stdout.read().decode()
            time.sleep(0.5)
    time.sleep(2)
    yield f"127.0.0.1:{port}"
    processes = psutil.Process(head.pid).children(recursive=True) + [psutil.Process(head.pid)]
    for process in processes:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=30)
    for process in processes:
        if process.is_running():
            process.kill()


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, SERVE, "score", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


def test_cli_joins_a_running_cluster(tmp_path, export_dir, head_address):
    inputs = make_mixed_inputs(tmp_path / "in", rows_per_file=20)
    done = _cli(export_dir, tmp_path / "in" / "*.jsonl", tmp_path / "out", "--engine", "ray", "--address", head_address,
                "--num-workers", "1", "--output-format", "jsonl", "--model", "fp32", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "scored 13 of 20 rows (7 errors" in done.stderr
    rows = [json.loads(line) for shard in sorted((tmp_path / "out").glob("part-*.jsonl"))
            for line in shard.read_text(encoding="utf-8").splitlines()]
    assert_same_rows(rows, local_rows(export_dir, inputs[1], tmp_path / "local.jsonl"))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["ray_address"] == head_address and manifest["rows_in"] == manifest["rows_out"] == 20

    # The export directory must exist on the workers: a clear error, not an actor crash.
    missing = _cli(tmp_path / "no-export", tmp_path / "in" / "*.jsonl", tmp_path / "out2", "--engine", "ray",
                   "--address", head_address, "--quiet")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "cannot be used on 1 of 1 Ray node(s)" in missing.stderr and "same path" in missing.stderr


def test_cli_errors_exit_2_without_traceback(tmp_path, export_dir):
    closed_port = _free_port()
    (tmp_path / "a.csv").write_text("text\nよい\n", encoding="utf-8")
    unreachable = _cli(export_dir, tmp_path / "a.csv", tmp_path / "out", "--engine", "ray", "--address", f"127.0.0.1:{closed_port}")
    assert unreachable.returncode == 2 and "cannot reach the Ray cluster at" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
    nothing = _cli(export_dir, tmp_path / "nothing" / "*.parquet", tmp_path / "out", "--engine", "ray")
    assert nothing.returncode == 2 and "matches no file" in nothing.stderr and "Traceback" not in nothing.stderr
    local_only = _cli(export_dir, tmp_path / "x.csv", tmp_path / "out", "--address", "auto")
    assert local_only.returncode == 2 and "--address needs --engine ray" in local_only.stderr


def test_bad_column_in_a_worker_is_a_user_error(tmp_path, export_dir, ray_runtime):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("review\nよい\n", encoding="utf-8")
    with pytest.raises(UserError, match="has no column 'text'.*--text-column"):
        score_file(ScoreOptions(export_dir=str(export_dir), input=str(tmp_path / "in"), output=str(tmp_path / "o"),
                                engine="ray", num_workers=1, show_progress=False))


def test_cli_starts_and_stops_a_local_ray(tmp_path, export_dir):
    import shutil
    import tempfile

    import psutil

    (tmp_path / "in.csv").write_text("text\nこの商品はとても良いです。\n\n最悪の料理でした。\n", encoding="utf-8")
    # A short private temp root (Ray's socket paths must stay under 108 bytes) tells its processes apart.
    ray_tmp = tempfile.mkdtemp(prefix="jray", dir="/tmp")
    try:
        done = subprocess.run(
            [sys.executable, SERVE, "score", str(export_dir), str(tmp_path / "in.csv"), str(tmp_path / "out"),
             "--engine", "ray", "--num-workers", "1", "--quiet"],
            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env={**os.environ, "RAY_TMPDIR": ray_tmp},
        )
        assert done.returncode == 0, done.stderr
        assert "scored 2 of 2 rows" in done.stderr
        assert json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))["ray_address"] == "local"
        leftovers = []
        for process in psutil.process_iter(["cmdline"]):
            try:
                if ray_tmp in " ".join(process.info["cmdline"] or []):
                    leftovers.append(process)
            except psutil.Error:
                pass
        names = [p.info["cmdline"][:2] for p in leftovers]
        for process in leftovers:  # ours (they run under our temp root): do not leave them behind
            process.kill()
        assert not leftovers, f"the local Ray was not stopped: {names}"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_pair_model_with_all_scores_on_ray(tmp_path, tmp_path_factory, ray_runtime):
    from conftest import cached_export
    from jbert.serve.runtime import OnnxClassifier

    _, pair_export = cached_export(tmp_path_factory, text_pair=True)
    pq.write_table(pa.table({"text": TEXTS + ["犬"], "text_pair": PAIRS + [""]}), tmp_path / "pairs.parquet")
    score_file(ScoreOptions(export_dir=str(pair_export), input=str(tmp_path / "pairs.parquet"), output=str(tmp_path / "out"),
                            engine="ray", model="fp32", num_workers=1, all_scores=True, show_progress=False))
    rows = read_shards(tmp_path / "out")
    classifier = OnnxClassifier.from_export_dir(pair_export, model="fp32", num_threads=1)
    expected = classifier.predict(TEXTS, PAIRS, top_k=3)
    for row, result in zip(rows, expected):
        assert row["predicted_label"] == result["label"] and row["error"] is None
        by_label = {s["label"]: s["score"] for s in result["scores"]}
        np.testing.assert_allclose([row["scores"][label] for label in classifier.labels],
                                   [by_label[label] for label in classifier.labels], atol=1e-6)
    assert rows[-1]["error"] == "row 7: column 'text_pair' is empty" and rows[-1]["scores"] is None
