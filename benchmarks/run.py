"""Run every benchmark module and write benchmarks/RESULTS.md.

Usage: ``python benchmarks/run.py [--out FILE] [name ...]`` (names of ``bench_<name>.py``;
default: all). Each ``bench_<name>.py`` defines ``TITLE`` and ``run() -> str`` (a Markdown
section). The results go to ``RESULTS.md`` (all), ``RESULTS-<names>.md`` (a scratch run of
some, not committed), or FILE: ``RESULTS_AVX2.md`` holds the figures of a CPU without AVX-512.
"""
import argparse
import datetime
import importlib
import pathlib
import sys

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))

from common import machine_description  # noqa: E402


def main(names, out=None, command="make bench"):
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    known = [m.removeprefix("bench_") for m in modules]
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit(f"run.py: no benchmark named {', '.join(unknown)}; choose from {', '.join(known)}")
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
    parser = argparse.ArgumentParser(description="Run the benchmarks and write their Markdown "
                                     "results (default: all of them into RESULTS.md).")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="benchmarks to run, by the NAME of bench_NAME.py (default: all)")
    parser.add_argument("--out", type=pathlib.Path, help="the results file (default: RESULTS.md "
                        "for all, RESULTS-<names>.md for some; RESULTS_AVX2.md holds the figures "
                        "of a CPU without AVX-512)")
    args = parser.parse_args()
    main(args.names, args.out, "make bench" if not sys.argv[1:] else
         "python benchmarks/run.py " + " ".join(sys.argv[1:]))
