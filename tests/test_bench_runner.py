"""benchmarks/run.py: which file a run writes, and the command its header names."""
import importlib.util
import pathlib
import subprocess
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def runner(tmp_path, monkeypatch):
    """run.py with one fake benchmark module, bench_fake.py, in ``tmp_path``."""
    (tmp_path / "bench_fake.py").write_text('TITLE = "Fake"\n\ndef run():\n    return "| a |"\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("benchmarks_run", BENCHMARKS / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    monkeypatch.setattr(run, "HERE", tmp_path)
    return run


def test_a_partial_run_writes_a_scratch_file_named_after_its_benchmarks(runner, tmp_path):
    runner.main(["fake"])
    text = (tmp_path / "RESULTS-fake.md").read_text()
    assert "## Fake\n\n| a |" in text and "with `make bench` on:" in text


def test_out_names_the_file_and_the_header_the_command(runner, tmp_path):
    out = tmp_path / "RESULTS_AVX2.md"
    runner.main(["fake"], out, "python benchmarks/run.py --out RESULTS_AVX2.md fake")
    text = out.read_text()
    assert "with `python benchmarks/run.py --out RESULTS_AVX2.md fake` on:" in text
    assert "## Fake" in text and not (tmp_path / "RESULTS-fake.md").exists()


def _run_py(*args):
    return subprocess.run([sys.executable, str(BENCHMARKS / "run.py"), *args],
                          capture_output=True, text=True, timeout=120)


def test_out_without_a_file_name_says_what_it_needs():
    done = _run_py("--out")
    assert done.returncode != 0 and "--out: expected one argument" in done.stderr


def test_help_prints_the_usage_and_writes_nothing():
    before = sorted(BENCHMARKS.glob("RESULTS*.md"))
    done = _run_py("--help")
    assert done.returncode == 0 and "usage: run.py" in done.stdout
    assert sorted(BENCHMARKS.glob("RESULTS*.md")) == before


def test_an_unknown_benchmark_name_is_refused_with_the_known_ones(runner, tmp_path):
    with pytest.raises(SystemExit, match="no benchmark named nope; choose from fake"):
        runner.main(["nope"])
    assert not list(tmp_path.glob("RESULTS*.md"))
