"""Fuzz the HTTP service with Schemathesis against its own OpenAPI schema: real server processes on loopback.

    python bench/http_fuzz.py                                  # tiny exports built here, 1000 examples per operation
    python bench/http_fuzz.py --max-examples 3000 --seed 7
    python bench/http_fuzz.py --export-dir outputs/onnx        # your export (single-text or pair model)

For each server set-up (a single-text model; the same with --api-key-file; a sentence-pair
model) it starts `serve_onnx.py http` on 127.0.0.1 and runs `schemathesis run` with every check
(no 5xx, status codes documented, content types, responses matching the schema, schema-valid
requests accepted, schema-invalid ones rejected, undocumented methods 405, auth not ignored),
over every operation, in the coverage and fuzzing phases. Prints one JSON object: cases
generated, failures (with their kinds), the status codes the server answered, seconds.

Two statuses are accepted for schema-valid requests besides 2xx, because no JSON Schema can say
when they happen: 413 (a text over the model's max_length tokens with "truncate": false; tokens
depend on the tokenizer; the TEI routes /predict and / say 422 there, as TEI does) and 503 (the
queue is full; 429 on the TEI routes). All are documented in the schema. And 413
counts as a rejection of a schema-violating request (Schemathesis' default list lacks it): a
generated text far over maxLength makes a body over --max-body-bytes, which is refused by size
before it is parsed.
tests/test_http_fuzz.py runs the same code with few examples in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from json_out import add_json_out_argument, write_json_out  # noqa: E402

# schemathesis.toml: the checks' configuration (see the module docstring for the two statuses).
SCHEMATHESIS_CONFIG = """\
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "413", "429", "503", "5xx"]

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]

# The TEI routes answer a text over max_length tokens with "truncate": false with 422, as TEI does
# (its "tokenization error"), where /v1/predict says 413; 429 is their "queue full".
[[operations]]
include-path-regex = "^/(predict)?$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "413", "422", "429", "503", "5xx"]
"""


def log(message: str) -> None:
    """Progress on stderr."""
    print(f"[http_fuzz {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(export_dir: Path, *extra_args: str, startup_timeout_s: float = 90.0, preexec_fn=None):
    """A `serve_onnx.py http` process on 127.0.0.1 (yields (base_url, process)); stopped with SIGTERM at the end.

    `preexec_fn` runs in the child before the server starts (tests set resource limits with it).
    """
    port = free_port()
    command = [sys.executable, str(REPO_ROOT / "serve_onnx.py"), "http", str(export_dir), "--host", "127.0.0.1",
               "--port", str(port), "--num-threads", "1", *extra_args]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=preexec_fn)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"server exited with {server.returncode}:\n{server.stdout.read()}")
            try:
                if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer /health within {startup_timeout_s:.0f} s")
            time.sleep(0.2)
        yield base_url, server
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)


def status_counts(base_url: str, headers: dict) -> dict[str, int]:
    """{"/predict 422": n, ...} from the server's own /metrics."""
    counts = {}
    for line in httpx.get(f"{base_url}/metrics", headers=headers, timeout=10).text.splitlines():
        if line.startswith("jbert_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            path = labels.split('path="')[1].split('"')[0]
            status = labels.split('status="')[1].split('"')[0]
            counts[f"{path} {status}"] = int(float(value))
    return counts


def run_schemathesis(base_url: str, max_examples: int, seed: int, headers: dict | None = None,
                     timeout_s: float = 1800.0) -> dict:
    """Run `schemathesis run` with every check against `base_url`; the summary of its JSON report."""
    headers = headers or {}
    with tempfile.TemporaryDirectory(prefix="jbert-fuzz-") as work:
        config = Path(work) / "schemathesis.toml"
        config.write_text(SCHEMATHESIS_CONFIG, encoding="utf-8")
        report = Path(work) / "report.json"
        command = [
            sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color", "run",
            f"{base_url}/openapi.json", "--checks", "all", "--phases", "examples,coverage,fuzzing",
            "--max-examples", str(max_examples), "--seed", str(seed), "--workers", "1",
            "--generation-database", "none", "--report", "json", "--report-json-path", str(report),
            "--request-timeout", "30",
        ]
        for name, value in headers.items():
            command += ["--header", f"{name}: {value}"]
        started = time.monotonic()
        # cwd: Schemathesis keeps crash files for `st replay` in ./.schemathesis; not in the repository.
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=work)
        seconds = time.monotonic() - started
        if not report.is_file():
            raise RuntimeError(f"schemathesis wrote no report (exit {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        data = json.loads(report.read_text(encoding="utf-8"))
    return {
        "exit_code": done.returncode,
        "complete": data["complete"],
        "stop_reason": data["stop_reason"],
        "operations_tested": data["operations"]["tested"],
        "operations_total": data["operations"]["total"],
        "cases": data["test_cases"]["generated"],
        "cases_with_failures": data["test_cases"]["with_failures"],
        "unique_failures": data["test_cases"]["unique_failures"],
        "errored": data["test_cases"]["errored"] + len(data["errors"]),
        "failures": [{"code": f["code"], "title": f["title"], "operations": f["operations"]} for f in data["failures"]],
        "errors": data["errors"],
        "seconds": round(seconds, 1),
        "output_tail": done.stdout[-3000:] if done.returncode else "",
    }


def fuzz_setup(name: str, export_dir: Path, max_examples: int, seed: int, api_key_file: Path | None = None) -> dict:
    """Start one server set-up, fuzz it, and return its summary with the statuses the server answered."""
    extra = ["--max-client-batch-size", "16"]
    headers = {}
    if api_key_file is not None:
        extra += ["--api-key-file", str(api_key_file)]
        headers["Authorization"] = "Bearer " + api_key_file.read_text(encoding="utf-8").strip()
    log(f"{name}: serving {export_dir}")
    with running_server(export_dir, *extra) as (base_url, server):
        result = run_schemathesis(base_url, max_examples, seed, headers)
        result["server_statuses"] = status_counts(base_url, headers)
        server.terminate()
        result["server_exit_code"] = server.wait(timeout=60)
    log(f"{name}: {result['cases']} cases, {result['unique_failures']} unique failures, {result['seconds']} s")
    return {"setup": name, **result}


def tiny_exports(work_dir: Path) -> dict[str, Path]:
    """Tiny random single-text and pair exports (built with export.py's code, cached in work_dir)."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from conftest import make_tiny_model_dir

    from jbert.export import ExportOptions, export_model

    exports = {}
    for name, pair in (("single", False), ("pair", True)):
        export_dir = work_dir / name / "export"
        if not (export_dir / "manifest.json").is_file():
            log(f"building a tiny {name} export in {export_dir}")
            model_dir = make_tiny_model_dir(work_dir / name / "model", text_pair=pair)
            export_model(model_dir, export_dir, ExportOptions(quantize=None, show_progress=False))
        exports[name] = export_dir
    return exports


def write_key_file(directory: Path) -> Path:
    """A fresh random bearer token in a mode-600 file."""
    import secrets

    key_file = directory / "api-key"
    key_file.write_text(secrets.token_urlsafe(32) + "\n", encoding="utf-8")
    key_file.chmod(0o600)
    return key_file


def main(argv=None) -> None:
    """Fuzz each set-up and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export-dir", help="fuzz this export instead of the tiny ones (plain and with a key)")
    parser.add_argument("--work-dir", default="/tmp/jbert-bench-http-fuzz", help="where the tiny exports are cached")
    parser.add_argument("--max-examples", type=int, default=1000, help="examples per operation and phase")
    parser.add_argument("--seed", type=int, default=0)
    add_json_out_argument(parser)
    args = parser.parse_args(argv)

    work_dir = Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if args.export_dir:
        exports = {"given": Path(args.export_dir)}
    else:
        exports = tiny_exports(work_dir)
    started = time.monotonic()
    results = []
    first = next(iter(exports))
    for name, export_dir in exports.items():
        results.append(fuzz_setup(name, export_dir, args.max_examples, args.seed))
        if name == first:
            results.append(fuzz_setup(f"{name}+api_key", export_dir, args.max_examples, args.seed,
                                      api_key_file=write_key_file(work_dir)))
    report = {
        "benchmark": "http_fuzz",
        "date": time.strftime("%Y-%m-%d"),
        "schemathesis": _version("schemathesis"),
        "max_examples": args.max_examples,
        "seed": args.seed,
        "cases": sum(r["cases"] for r in results),
        "unique_failures": sum(r["unique_failures"] for r in results),
        "errored": sum(r["errored"] for r in results),
        "server_5xx": sum(n for r in results for key, n in r["server_statuses"].items() if key.split()[-1].startswith("5")),
        "seconds": round(time.monotonic() - started, 1),
        "setups": results,
    }
    print(json.dumps(report, indent=2))
    write_json_out(args.json_out, "http_fuzz", report, argv)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
