"""Pictures for chapter 10 (key points), drawn from the rows of ``key_points.csv``.

Each function takes the rows of one study (:func:`edu_seg.bench.recipe.read_rows`,
filtered by ``study``) and returns a ``matplotlib.figure.Figure`` (headless-safe).

- :func:`plot_backbones`: mIoU against training step time, one point per backbone family.
- :func:`plot_supervision`: mIoU of every seed with and without deep supervision, and the
  training cross-entropy curves of the seeds.
- :func:`plot_resolution`: mIoU against step time for the heavy part at 1/8, 1/16, 1/32.
- :func:`plot_pretraining`: held-out mIoU against training steps, scratch against pretrained,
  for each family and number of labelled images.
"""
import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_backbones", "plot_supervision", "plot_resolution", "plot_pretraining",
           "STUDY_PLOTS"]


def _scatter_time_accuracy(rows, label_of, title):
    """mIoU against the training step's ms, each point labelled."""
    fig = Figure(figsize=(7.6, 4.2), layout="constrained")
    ax = fig.subplots()
    for r in rows:
        x, y = float(r["step_ms"]), float(r["miou"])
        ax.scatter(x, y, s=40, zorder=3)
        ax.annotate(label_of(r), (x, y), xytext=(5, 3), textcoords="offset points",
                    fontsize=8)
    ax.margins(x=0.45, y=0.12)          # room for the labels right of the points
    threads = rows[0]["threads"]
    ax.set_xlabel(f"ms per training step (batch 16, {threads} "
                  f"thread{'' if str(threads) == '1' else 's'})")
    ax.set_ylabel("mIoU on Shapes default")
    ax.set_title(f"{title}\n({rows[0]['cpu']}, {rows[0]['steps']} steps)", fontsize=9)
    ax.grid(True, alpha=0.3)
    return fig


def plot_backbones(rows):
    """DeepLabV3+ on each backbone family: mIoU against step time, with MFLOPs and parameters
    in each label."""
    return _scatter_time_accuracy(
        rows, lambda r: f"{r['setting']} ({int(r['flops']) / 1e6:.0f} MFLOPs, "
                        f"{int(r['params']) / 1e3:.0f}K params)",
        "One decoder (DeepLabV3+), five backbone families matched in parameters")


def plot_resolution(rows):
    """DeepLabV3+ with its heavy part at 1/8, 1/16, 1/32: mIoU against step time."""
    return _scatter_time_accuracy(
        rows, lambda r: f"{r['setting']} ({int(r['flops']) / 1e6:.0f} MFLOPs)",
        "Where the heavy part works: DeepLabV3+ at three output strides")


def plot_supervision(rows):
    """Left: each seed's mIoU with deep supervision and with the final loss only, per model.
    Right: each seed's training cross-entropy of the final prediction (the ``ce`` term, the
    same quantity with and without the auxiliary terms), averaged over twentieths of the run."""
    models = list(dict.fromkeys(r["model"].partition(":")[0] for r in rows))
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    fig = Figure(figsize=(11, 4.0), layout="constrained")
    left, right = fig.subplots(1, 2)
    colours = {s: c for s, c in zip(settings, ("tab:blue", "tab:orange"))}
    for i, model in enumerate(models):
        for j, setting in enumerate(settings):
            ys = [float(r["miou"]) for r in rows
                  if r["model"].partition(":")[0] == model and r["setting"] == setting]
            x = i + (j - 0.5) * 0.3
            left.scatter([x] * len(ys), ys, color=colours[setting], s=30, zorder=3,
                         label=setting if i == 0 else None)
            if ys:
                left.hlines(np.mean(ys), x - 0.1, x + 0.1, color=colours[setting])
    left.set_xticks(range(len(models)), models)
    left.set_ylabel("mIoU on Shapes default")
    left.set_title("Each seed's mIoU (bar: mean)", fontsize=9)
    left.legend(fontsize=8)
    left.grid(True, axis="y", alpha=0.3)
    for r in rows:
        curve = [float(v) for v in r["ce_curve"].split(";")]
        steps = np.linspace(0, int(r["steps"]), len(curve) + 1)
        right.plot((steps[:-1] + steps[1:]) / 2, curve, color=colours[r["setting"]],
                   alpha=0.6, lw=1)
    right.set_yscale("log")
    right.set_xlabel("training step")
    right.set_ylabel("final prediction's training cross-entropy")
    right.set_title("Training cross-entropy of every model and seed (colour: setting)",
                    fontsize=9)
    right.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"Deep supervision on and off ({rows[0]['cpu']}, {rows[0]['steps']} steps)",
                 fontsize=10)
    return fig


def plot_pretraining(rows):
    """Held-out mIoU against training steps, one panel per number of labelled images; solid:
    pretrained backbone, dashed: from scratch, one colour per family."""
    sizes = sorted({int(r["train_samples"]) for r in rows})
    families = list(dict.fromkeys(r["setting"].partition(",")[0] for r in rows))
    colour = dict(zip(families, ("tab:blue", "tab:orange", "tab:green", "tab:red",
                                 "tab:purple")))
    fig = Figure(figsize=(5.2 * len(sizes), 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(sizes), sharey=True))
    for ax, n in zip(axes, sizes):
        for r in rows:
            if int(r["train_samples"]) != n or not r["miou_curve"]:
                continue
            points = [p.split(":") for p in r["miou_curve"].split()]
            family, _, kind = r["setting"].partition(", ")
            ax.plot([int(s) for s, _ in points], [float(m) for _, m in points],
                    color=colour[family], ls="-" if kind == "pretrained" else "--",
                    label=r["setting"])
        ax.set_title(f"{n} labelled images", fontsize=9)
        ax.set_xlabel("fine-tuning step")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("held-out mIoU")
    axes[-1].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Pretrained (solid) against from scratch (dashed), DeepLabV3+ "
                 f"({rows[0]['cpu']})", fontsize=10)
    return fig


#: study -> its plot (what :func:`edu_seg.bench.key_points.write_key_points` draws).
STUDY_PLOTS = {"backbones": plot_backbones, "supervision": plot_supervision,
               "resolution": plot_resolution, "pretraining": plot_pretraining}
