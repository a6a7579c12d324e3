"""Every code block of the README runs: each Python block in a fresh interpreter, each shell
command in order in one scratch folder, the slow ones in fast mode.

Fast mode, applied here and nowhere else: ``edu-seg train`` and ``edu-seg pretrain`` get
``--steps 2`` and tiny data (16 training and 8 validation Shapes images, batch 8) appended,
which override the README's own values; ``edu-seg zoo`` gets ``--steps 2``, ``edu-seg
key-points`` ``--quick --steps 2 --pretrain-steps 2``; ``make demo`` runs
the demo in process with a tiny ``DEMO``. The placeholders a reader replaces are made real in
the scratch folder: a small CamVid-style folder at ``path/to/CamVid`` and a Shapes picture
``in.png``. ``edu-seg`` is called as ``python -m edu_seg.cli`` (the console script is the same
entry point). Lines that install or activate something (``pip``, ``source``) and ``make test``
(this suite) are not run; :func:`test_every_readme_command_is_run_or_deliberately_skipped`
keeps that list honest.
"""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edu_seg import cli
from helpers import make_camvid_folder

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README, flags=re.S | re.M)
NOT_RUN = ("make test", "pip ", "source ")
FAST_TRAIN = ["--steps", "2", "--train-samples", "16", "--val-samples", "8", "--batch-size", "8",
              "--no-progress"]


def shell_commands():
    """The README's shell commands, one per line, comments and blank lines dropped."""
    commands = []
    for language, body in BLOCKS:
        if language == "bash":
            for line in body.splitlines():
                command = line.split("#", 1)[0].strip()
                if command:
                    commands.append(command)
    return commands


def environment():
    return {**os.environ, "PYTHONPATH": str(ROOT), "EDU_SEG_NUM_THREADS": "2"}


def make_scratch(folder):
    """``path/to/CamVid`` (8 training, 4 validation images, 32x32) and ``in.png``."""
    from PIL import Image

    from edu_seg.data import Shapes

    make_camvid_folder(folder / "path" / "to" / "CamVid", n_train=8, n_val=4)
    image = Shapes(1, size=64, seed=9)[0]["image"]
    Image.fromarray((image.transpose(1, 2, 0) * 255).astype(np.uint8)).save(folder / "in.png")


def fast(argv):
    """The fast-mode version of one ``edu-seg`` command's arguments."""
    if argv[0] == "train":
        return argv + FAST_TRAIN
    if argv[0] == "pretrain":
        return argv + [a for a in FAST_TRAIN if a != "--no-progress"]   # it has no bar
    if argv[0] == "zoo" and "--plot" not in argv:
        return argv + ["--steps", "2", "--no-progress"]
    if argv[0] == "key-points":
        return argv + ["--quick", "--steps", "2", "--pretrain-steps", "2"]
    return argv


def test_readme_has_both_kinds_of_blocks():
    languages = [language for language, _ in BLOCKS]
    assert languages.count("bash") >= 2 and languages.count("python") >= 2


@pytest.mark.parametrize("index", [i for i, (lang, _) in enumerate(BLOCKS) if lang == "python"])
def test_python_block_runs(index, tmp_path):
    code = BLOCKS[index][1]
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"README python block {index}:\n{code}\n{result.stderr}"


def test_every_readme_command_is_run_or_deliberately_skipped():
    for command in shell_commands():
        assert command.startswith(("edu-seg ", "make demo")) or command.startswith(NOT_RUN), \
            f"README command {command!r}: the README test does not know how to run it"


def test_shell_commands_run_in_order(tmp_path, monkeypatch, capsys):
    make_scratch(tmp_path)
    monkeypatch.chdir(tmp_path)
    ran = []
    for command in shell_commands():
        if command.startswith(NOT_RUN):
            continue
        if command == "make demo":
            monkeypatch.setattr(cli, "DEMO", {**cli.DEMO, "train_samples": 16,
                                              "val_samples": 8, "epochs": 1, "batch_size": 8,
                                              "out": str(tmp_path / "runs" / "demo")})
            assert cli.main(["demo", "--no-progress"]) == 0, capsys.readouterr().err
            ran.append(command)
            continue
        argv = fast(shlex.split(command)[1:])
        result = subprocess.run([sys.executable, "-m", "edu_seg.cli", *argv], cwd=tmp_path,
                                env=environment(), capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, (f"README command {command!r} (run as "
                                        f"{shlex.join(argv)}) failed:\n{result.stderr[-3000:]}")
        ran.append(command)
    assert len(ran) >= 15
    assert (tmp_path / "zoo" / "speed_accuracy.png").is_file()
    assert (tmp_path / "compare.png").is_file() and (tmp_path / "objects.png").is_file()
