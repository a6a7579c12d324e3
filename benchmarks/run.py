"""Run every benchmark module and write benchmarks/RESULTS.md.

Usage: ``python benchmarks/run.py [--out FILE] [name ...]`` (names of ``bench_<name>.py``;
default: all). Each ``bench_<name>.py`` defines ``TITLE`` and ``run() -> str`` (a Markdown
section). The results go to ``RESULTS.md`` (all), ``RESULTS-<names>.md`` (a scratch run of
some, not committed), or FILE: ``RESULTS_AVX2.md`` holds the figures of a CPU without AVX-512.
"""
import datetime
import importlib
import pathlib
import sys

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))

from common import machine_description  # noqa: E402


def main(names, out=None, command="make bench"):
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
    if out is None:
        out = HERE / ("RESULTS.md" if not names else f"RESULTS-{'-'.join(names)}.md")
    out.write_text(
        "# Benchmark results\n\n"
        f"Measured {datetime.date.today()} with `{command}` on: {machine_description()}.\n\n"
        "Times are milliseconds, median (min) of several runs; `fwd+bwd` includes the forward.\n\n"
        + "\n".join(sections))
    print(f"wrote {out}")


if __name__ == "__main__":
    args = sys.argv[1:]
    out = None
    if args[:1] == ["--out"]:
        if len(args) < 2:
            sys.exit("run.py: --out needs a file name, e.g. --out benchmarks/RESULTS_AVX2.md")
        out, args = pathlib.Path(args[1]), args[2:]
    main(args, out, "make bench" if not sys.argv[1:] else
         "python benchmarks/run.py " + " ".join(sys.argv[1:]))
