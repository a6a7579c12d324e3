"""Run every benchmark module and write benchmarks/RESULTS.md.

Usage: ``python benchmarks/run.py [name ...]`` (names of ``bench_<name>.py``; default: all).
Each ``bench_<name>.py`` defines ``TITLE`` and ``run() -> str`` (a Markdown section).
"""
import datetime
import importlib
import pathlib
import sys

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))

from common import machine_description  # noqa: E402


def main(names):
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if names:
        modules = [m for m in modules if m.removeprefix("bench_") in names]
    sections = []
    for name in modules:
        mod = importlib.import_module(name)
        print(f"== {mod.TITLE}", flush=True)
        section = mod.run()
        print(section, flush=True)
        sections.append(f"## {mod.TITLE}\n\n{section}\n")
    out = HERE / ("RESULTS.md" if not names else f"RESULTS-{'-'.join(names)}.md")
    out.write_text(
        "# Benchmark results\n\n"
        f"Measured {datetime.date.today()} with `make bench` on: {machine_description()}.\n\n"
        "Times are milliseconds, median (min) of several runs; `fwd+bwd` includes the forward.\n\n"
        + "\n".join(sections))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
