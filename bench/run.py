"""Run benchmark sections and write them into docs/BENCHMARKS.md.

Each module ``bench/bench_<name>.py`` exposes ``run(quick: bool = False) -> str`` returning a
Markdown section. Sections live between markers in the document, so running one section
(``--only render``) updates it and keeps the others.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import sys
import time
from pathlib import Path

SECTIONS = ["separation", "phase", "transcription", "stream", "plugin", "render", "data", "scaleout"]  # order in the document

HEADER = """# Benchmarks

Measured by `make bench` (`python -m bench.run`); each section names the command that produced
it. Machine: {machine}. Regenerate one section with `python -m bench.run --only NAME`.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="docs/BENCHMARKS.md")
    ap.add_argument("--only", action="append", choices=SECTIONS, help="run only these sections")
    ap.add_argument("--quick", action="store_true", help="smaller inputs (smoke test of the benchmarks)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    doc = out.read_text() if out.exists() else ""
    cpu = "unknown CPU"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    machine = f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"
    if not doc.startswith("# Benchmarks"):
        doc = HEADER.format(machine=machine)
    else:
        doc = re.sub(r"Machine: .*?\. Regenerate", f"Machine: {machine}. Regenerate", doc, count=1, flags=re.S)
    failed = []
    for name in args.only or SECTIONS:
        try:
            mod = importlib.import_module(f"bench.bench_{name}")
        except ModuleNotFoundError as exc:
            print(f"bench: skipping {name}: {exc}", file=sys.stderr)
            continue
        t0 = time.time()
        load = os.getloadavg()[0]  # other work on the cores slows every speed figure of the section
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            body = mod.run(quick=args.quick).strip()
        except Exception as exc:  # keep the other sections; report and exit non-zero
            print(f"bench: {name} failed: {exc!r}", file=sys.stderr)
            failed.append(name)
            continue
        stamp = time.strftime("%Y-%m-%d")
        busy = ("; other work was running, so its speed figures are lower than this machine's when idle"
                if load >= 0.5 * (os.cpu_count() or 1) else "")
        block = (f"<!-- section:{name} -->\n{body}\n\n_Measured {stamp} in {time.time() - t0:.0f} s, 1-min load "
                 f"average {load:.1f} on {os.cpu_count()} cores when it started{busy}._\n<!-- /section:{name} -->")
        pattern = re.compile(rf"<!-- section:{name} -->.*?<!-- /section:{name} -->", re.S)
        doc = pattern.sub(lambda _: block, doc) if pattern.search(doc) else doc.rstrip() + "\n\n" + block + "\n"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(doc)
        print(f"bench: {name} done in {time.time() - t0:.0f} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
