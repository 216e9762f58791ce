"""Build the wheel folder the GPU proof kit carries to a machine without network (bench/gpu_check.py --wheels).

    python bench/gpu_wheels.py --out wheels/ --python-version 3.12                 # the image's `python3 -V`
    python bench/gpu_wheels.py --out wheels/ --present image-freeze.txt            # `pip freeze` of the image
    python bench/gpu_wheels.py --out wheels/ --dry-run                             # list, download nothing

What goes in: the packages bench/gpu_check.py needs (NEEDED and their dependencies, at the versions
installed here, i.e. requirements.txt's pins) minus what the GPU image already has (PRESENT and their
dependencies, or the names in --present). Binary wheels are fetched for the image's Python and
platform (`pip download --only-binary=:all: --no-deps`); a package published only as a source
archive (DeepSpeed) is built here into a pure-Python wheel (`pip wheel --no-deps`), its CUDA ops
compiled on first use there. The folder gets requirements.txt (the exact pins, installed with
`pip install --no-index --find-links wheels --no-deps -r wheels/requirements.txt`) and
manifest.json (sizes). Over --max-mib it fails and names the largest wheels: `--skip NAME` leaves
one out, and the kit's sections that need it report it missing instead of failing the others.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from json_out import add_json_out_argument, write_json_out  # bench/ is sys.path[0] when run as a script
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# What the GPU image has (the list): these and their dependencies are never packed.
PRESENT = ("torch", "transformers", "accelerate", "tokenizers", "sentencepiece", "onnx", "onnxruntime")
# What bench/gpu_check.py needs beyond them: jbert's training (datasets, scikit-learn, scipy,
# matplotlib for the plots), ZeRO (deepspeed) and the export (optimum, optimum-onnx).
NEEDED = ("datasets", "scikit-learn", "scipy", "matplotlib", "deepspeed", "optimum", "optimum-onnx")
# optimum-onnx 0.1.0 needs transformers < 4.58; the image has 5.x. The export's own process gets the
# pinned transformers and what it pins from wheels/export (installed aside, never over the image's).
EXPORT_STACK = ("transformers", "huggingface-hub", "tokenizers")


def closure(roots: list[str]) -> dict[str, str]:
    """{canonical name: installed version} of `roots` and everything they require (extras left out), as installed here."""
    found, todo = {}, list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not installed here: nothing to pin (the image must bring it, or it is optional)
        found[name] = distribution.version
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


def present_names(path: Path | None) -> set[str]:
    """Names the image has: from a `pip freeze` file, else PRESENT and their dependencies as installed here."""
    if path is None:
        return set(closure(list(PRESENT)))
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(canonicalize_name(line.split("==")[0].split(" @ ")[0].split(">=")[0]))
    return names


def plan(present: set[str], skip: set[str]) -> dict[str, str]:
    """{name: version} to pack: NEEDED's closure minus the present and the skipped names."""
    needed = closure(list(NEEDED))
    return {name: version for name, version in sorted(needed.items()) if name not in present and name not in skip}


def fetch(name: str, version: str, out: Path, python_version: str, platform: str) -> str:
    """Download the wheel of name==version for the target, or build a pure-Python one from the source archive."""
    target = [f"--python-version={python_version}", f"--platform={platform}", "--implementation=cp"]
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", *target,
                "-d", str(out), f"{name}=={version}"]
    if subprocess.run(download, capture_output=True, text=True).returncode == 0:
        return "downloaded"
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out),
             f"{name}=={version}"]
    done = subprocess.run(build, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name}=={version}: no wheel for Python {python_version} on {platform}, and building one "
                         f"failed: {done.stderr[-800:]}")
    return "built here (pure Python)"


def main(argv=None) -> int:
    """Plan, fetch, measure; print one JSON object; exit 1 when the folder is over --max-mib."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("wheels"))
    parser.add_argument("--python-version", default=f"{sys.version_info.major}.{sys.version_info.minor}",
                        help="the GPU image's Python (default: this one's)")
    parser.add_argument("--platform", default="manylinux_2_28_x86_64")
    parser.add_argument("--present", type=Path, default=None, help="`pip freeze` of the GPU image")
    parser.add_argument("--skip", nargs="*", default=[], help="packages to leave out")
    parser.add_argument("--max-mib", type=float, default=50.0)
    parser.add_argument("--dry-run", action="store_true", help="list what would be packed; fetch nothing")
    add_json_out_argument(parser)
    args = parser.parse_args(argv)

    packages = plan(present_names(args.present), {canonicalize_name(n) for n in args.skip})
    report = {"python_version": args.python_version, "platform": args.platform, "packages": packages,
              "max_mib": args.max_mib}
    if not args.dry_run:
        args.out.mkdir(parents=True, exist_ok=True)
        report["how"] = {name: fetch(name, version, args.out, args.python_version, args.platform)
                         for name, version in packages.items()}
        export = {canonicalize_name(n): metadata.version(n) for n in EXPORT_STACK}
        (args.out / "export").mkdir(exist_ok=True)
        for name, version in export.items():
            fetch(name, version, args.out / "export", args.python_version, args.platform)
        (args.out / "export" / "requirements.txt").write_text("".join(f"{n}=={v}\n" for n, v in export.items()),
                                                              encoding="utf-8")
        report["export_stack"] = export
        wheels = sorted(args.out.glob("**/*.whl"), key=lambda p: p.stat().st_size, reverse=True)
        sizes = {str(p.relative_to(args.out)): round(p.stat().st_size / 2**20, 2) for p in wheels}
        report.update(total_mib=round(sum(sizes.values()), 1), wheels_mib=sizes)
        (args.out / "requirements.txt").write_text("".join(f"{n}=={v}\n" for n, v in packages.items()), encoding="utf-8")
        (args.out / "manifest.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        report["fits"] = report["total_mib"] <= args.max_mib
    print(json.dumps(report))
    write_json_out(args.json_out, "gpu_wheels", report, argv)
    return 0 if report.get("fits", True) else 1


if __name__ == "__main__":
    sys.exit(main())
