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


def test_out_without_a_file_name_says_what_it_needs():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "run.py"), "--out"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "--out needs a file name" in done.stderr
