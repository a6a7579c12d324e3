"""Chapter 10 cites the committed tables: every number in its tables is the one in
``zoo/key_points.csv`` or ``zoo/results.csv`` (rounded as printed), so a rerun of a study
that changes a result makes this test name the line to update."""
import statistics
from pathlib import Path

import pytest

from edu_seg.bench.key_points import BACKBONE_FAMILIES, DEEP_SUPERVISION
from edu_seg.bench.recipe import read_rows
from edu_seg.bench.zoo import read_results

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = (ROOT / "chapters" / "10-key-points.md").read_text()
KEY_POINTS = read_rows(ROOT / "zoo" / "key_points.csv")
ZOO = {(r["model"], r["variant"]): r for r in read_results(ROOT / "zoo" / "results.csv")
       if r["supervision"] == "masks"}


def line(prefix):
    """The one table line of the chapter that starts with ``prefix``."""
    found = [row for row in CHAPTER.splitlines() if row.startswith(prefix)]
    assert len(found) == 1, f"chapter 10: {len(found)} table lines start with {prefix!r}"
    return found[0]


def assert_in_order(text, values):
    """Each of ``values`` appears in ``text``, in this order, as its own table cell part."""
    at = 0
    for value in values:
        found = text.find(value, at)
        assert found >= 0, f"chapter 10: {value!r} missing (or out of order) in {text!r}"
        at = found + len(value)


def signed(x):
    """+0.018 / −0.031, as the chapter prints a gap (a real minus sign)."""
    return f"{x:+.3f}".replace("-", "−")


def rows(study, **match):
    return [r for r in KEY_POINTS if r["study"] == study
            and all(r[k] == str(v) for k, v in match.items())]


@pytest.mark.parametrize("family", BACKBONE_FAMILIES)
def test_backbone_table_is_the_study(family):
    (r,) = rows("backbones", setting=family)
    assert_in_order(line(f"| {family} | `{r['backbone']}` | {int(r['params']):,} |"),
                    [f"{int(r['flops']) / 1e6:.1f}", f"{float(r['step_ms']):.0f}",
                     f"{float(r['infer_img_s']):.0f}", f"{float(r['miou']):.3f}",
                     f"{float(r['boundary_iou']):.3f}"])


@pytest.mark.parametrize("family", BACKBONE_FAMILIES)
def test_pretraining_table_is_the_study(family):
    runs = {(r["setting"].partition(", ")[2], r["train_samples"]): r
            for r in rows("pretraining") if r["setting"].startswith(f"{family}, ")}
    accuracy = float(runs[("pretrained", "64")]["pretrain_label_acc"])
    assert_in_order(line(f"| {family} | {accuracy:.3f} |"),
                    [f"{float(runs[(kind, n)]['miou']):.3f}" for n in ("64", "1024")
                     for kind in ("scratch", "pretrained")])


@pytest.mark.parametrize("stride", [8, 16, 32])
def test_resolution_table_is_the_study(stride):
    (r,) = rows("resolution", setting=f"heavy part at 1/{stride}")
    assert_in_order(line(f"| 1/{stride} | {int(r['flops']) / 1e6:.0f} |"),
                    [f"{float(r['step_ms']):.0f}", f"{float(r['infer_img_s']):.0f}",
                     f"{float(r['miou']):.3f}", f"{float(r['boundary_iou']):.3f}"])


@pytest.mark.parametrize("model, name", [("pspnet", "PSPNet"), ("bisenet", "BiSeNet"),
                                         ("dfn", "DFN"), ("icnet", "ICNet")])
def test_supervision_table_is_the_study(model, name):
    on = [float(r["miou"]) for r in rows("supervision", model=model)]
    off = [float(r["miou"])
           for r in rows("supervision", model=f"{model}:{DEEP_SUPERVISION[model]}")]
    assert len(on) == len(off) == 3
    cells = [f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}" for v in (on, off)]
    gap = signed(statistics.mean(on) - statistics.mean(off))
    by_seed = ", ".join(signed(a - b) for a, b in zip(on, off))
    assert_in_order(line(f"| {name} | "), cells + [gap, by_seed])


# Section 2's lines (the combinations of scales: values only) and section 3's (with the gap).
SCALES = [
    ("| FCN-8s / FCN-16s / FCN-32s | `default` |",
     [("fcn8s", "default"), ("fcn16s", "default"), ("fcn32s", "default")]),
    ("| DeepLabV3+ / no decoder | `default` |",
     [("deeplabv3plus", "default"), ("deeplabv3plus:no_decoder", "default")]),
    ("| DeepLabV3+ / no decoder | `boundary` |",
     [("deeplabv3plus", "boundary"), ("deeplabv3plus:no_decoder", "boundary")]),
    ("| FRRN / no residual stream | `boundary` |",
     [("frrn", "boundary"), ("frrn:no_residual_stream", "boundary")]),
]
CONTEXT = [
    ("| pyramid pooling", ("pspnet", "pspnet:no_pyramid", "context")),
    ("| average rather than max", ("pspnet", "pspnet:max_pool", "context")),
    ("| image pooling in ASPP", ("deeplabv3", "deeplabv3:no_image_pool", "scale")),
    ("| ASPP at output stride 8", ("deeplabv3:os8", "deeplabv3", "scale")),
    ("| a large separable kernel", ("gcn", "gcn:k3", "context")),
    ("| dense atrous connections", ("denseaspp", "denseaspp:no_dense", "scale")),
    ("| chained residual pooling", ("refinenet", "refinenet:unchained", "context")),
]


@pytest.mark.parametrize("prefix, keys", SCALES, ids=[p for p, _ in SCALES])
def test_scale_comparisons_are_the_zoo_rows(prefix, keys):
    assert_in_order(line(prefix), [f"{float(ZOO[key]['miou']):.3f}" for key in keys])


@pytest.mark.parametrize("prefix, pair", CONTEXT, ids=[p for p, _ in CONTEXT])
def test_context_ablations_are_the_zoo_rows(prefix, pair):
    with_idea, without, variant = pair
    a, b = (float(ZOO[(m, variant)]["miou"]) for m in (with_idea, without))
    assert_in_order(line(prefix), [f"{a:.3f}", f"{b:.3f}", signed(a - b)])
