"""Chapters 5 to 9 cite the zoo: every mIoU and boundary IoU in their model tables is the one in
``zoo/results.csv``, rounded as printed. A rerun of ``edu-seg zoo`` that changes a result
makes this test name the chapter line to update (chapter 10 has its own test).

A model table is a Markdown table whose first column names a zoo row (``pspnet``,
``pspnet:no_pyramid``, ``deeplabv3 (output stride 16)``, in backticks or not) and whose
header names the measure: ```context` mIoU`` or ```boundary` boundary IoU`` (a variant and a
measure), or a bare ``mIoU`` / ``boundary IoU`` for the ``default`` variant.
"""
import re
from pathlib import Path

import pytest

from edu_seg.bench.zoo import read_results

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ["05-region-based.md", "06-fcn-based.md", "08-sota.md", "09-2018.md"]
ZOO = {(r["model"], r["variant"]): r for r in read_results(ROOT / "zoo" / "results.csv")
       if r["supervision"] == "masks"}
MEASURES = {"mIoU": "miou", "boundary IoU": "boundary_iou"}
HEADER = re.compile(r"^(?:`(\w+)` )?(mIoU|boundary IoU)$")
NUMBER = re.compile(r"^\*{0,2}(\d\.\d+)\*{0,2}$")


def cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def cited_numbers(chapter):
    """``(line number, model, variant, column, printed)`` for every number of a model table."""
    lines = (ROOT / "chapters" / chapter).read_text().splitlines()
    for i, line in enumerate(lines):
        if not (line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|--")):
            continue
        columns = [HEADER.match(h) for h in cells(line)]
        for j in range(i + 2, len(lines)):
            if not lines[j].startswith("|"):
                break
            row = cells(lines[j])
            model = row[0].strip("`").split(" ")[0].strip("`")
            if not any(m == model for m, _ in ZOO):
                continue
            for column, printed in zip(columns[1:], row[1:]):
                number = NUMBER.match(printed)
                if column and number:
                    variant = column.group(1) or "default"
                    yield j + 1, model, variant, MEASURES[column.group(2)], number.group(1)


CITED = [(chapter, *c) for chapter in CHAPTERS for c in cited_numbers(chapter)]


def test_the_chapters_cite_the_zoo():
    """The parser finds the tables (a parser that finds nothing would pass every check)."""
    found = {chapter for chapter, *_ in CITED}
    assert found == set(CHAPTERS)
    assert len(CITED) > 80


@pytest.mark.parametrize("chapter, line, model, variant, measure, printed", CITED,
                         ids=[f"{c[0][:2]}:{c[1]}:{c[2]}:{c[3]}:{c[4]}" for c in CITED])
def test_a_cited_number_is_the_zoo_row(chapter, line, model, variant, measure, printed):
    assert (model, variant) in ZOO, f"{chapter}:{line}: no zoo row ({model}, {variant})"
    decimals = len(printed.split(".")[1])
    measured = f"{float(ZOO[(model, variant)][measure]):.{decimals}f}"
    assert printed == measured, (f"chapters/{chapter}:{line}: {model} on {variant}, "
                                 f"{measure} {printed}, the zoo says {measured}")


# Chapter 9's verdicts: each idea against its ablation on the variant built for it.
VERDICTS = [
    ("| ICNet's cascade |", "icnet", "icnet:no_cascade", "default"),
    ("| ICNet's label guidance |", "icnet", "icnet:no_label_guidance", "boundary"),
    ("| BiSeNet's spatial path |", "bisenet", "bisenet:no_spatial_path", "boundary"),
    ("| BiSeNet's attention", "bisenet", "bisenet:no_attention", "context"),
    ("| DFN's channel attention", "dfn", "dfn:no_cab", "context"),
    ("| DFN's border network |", "dfn", "dfn:no_border", "boundary"),
    ("| DenseASPP's dense", "denseaspp", "denseaspp:no_dense", "scale"),
    ("| EncNet's context encoding |", "encnet", "encnet:no_encoding", "context"),
    ("| EncNet's SE-loss |", "encnet", "encnet:no_se_loss", "context"),
    ("| DDSC's dense shortcuts |", "ddsc", "ddsc:no_dense_shortcuts", "scale"),
    ("| ExFuse's semantic embedding |", "exfuse", "exfuse:no_seb", "boundary"),
    ("| ExFuse's channel-resolution", "exfuse", "exfuse:no_ecre", "boundary"),
    ("| ExFuse's densely adjacent", "exfuse", "exfuse:no_dap", "boundary"),
]


@pytest.mark.parametrize("prefix, with_idea, without, variant", VERDICTS,
                         ids=[v[1] + "/" + v[2] for v in VERDICTS])
def test_chapter_9_verdict_is_the_zoo_rows(prefix, with_idea, without, variant):
    """The numbers, and the verdict by the chapter's rule: decided beyond 0.05 mIoU."""
    lines = [line for line in (ROOT / "chapters" / "09-2018.md").read_text().splitlines()
             if line.startswith(prefix)]
    assert len(lines) == 1, f"chapter 9: {len(lines)} lines start with {prefix!r}"
    a, b = (float(ZOO[(m, variant)]["miou"]) for m in (with_idea, without))
    verdict = "helps" if a - b > 0.05 else "hurts" if b - a > 0.05 else "undecided"
    assert cells(lines[0])[1:] == [f"`{variant}`", f"{a:.3f}", f"{b:.3f}", f"{a - b:+.3f}",
                                   verdict]
