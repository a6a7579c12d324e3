"""``edu-seg zoo --plot``: inference timing of the zoo's models, speed.csv, and the picture."""
import numpy as np
import pytest

from edu_seg import cli, models
from edu_seg.bench.speed import (SPEED_COLUMNS, inference_ms, measure_speed, merge_speed,
                                 run_speed, write_speed)
from edu_seg.bench.zoo import COLUMNS, read_results, write_results
from edu_seg.viz.speed import plot_speed_accuracy


def _zoo_row(model, variant="default", miou="0.9000"):
    row = dict.fromkeys(COLUMNS, "")
    row.update(model=model, variant=variant, miou=miou, params="1", flops="1")
    return row


def test_inference_ms_is_a_positive_time_and_restores_the_mode():
    model = models.create("fcn8s", num_classes=4)
    model.train()
    ms = inference_ms(model, 64, repeats=2)
    assert ms > 0 and np.isfinite(ms)
    assert model.training


@pytest.mark.parametrize("size", [60, 0, 64.0, True])
def test_inference_ms_refuses_a_size_off_the_output_stride(size):
    model = models.create("fcn8s", num_classes=4)
    with pytest.raises(ValueError, match="positive multiple of .* output stride 32"):
        inference_ms(model, size)


def test_measure_speed_gives_one_row_per_model_with_every_size():
    rows = measure_speed(["fcn8s"], sizes=(64, 256), progress=None)
    assert [r["model"] for r in rows] == ["fcn8s"]
    assert set(SPEED_COLUMNS) <= set(rows[0])
    # both sizes timed (no order between them asserted: a timing under a busy machine is
    # noise, and the suite never asserts speed; make bench and the zoo measure it)
    assert float(rows[0]["ms_256"]) > 0 and float(rows[0]["ms_64"]) > 0


def test_measure_speed_names_an_unknown_model():
    with pytest.raises(ValueError, match="no_such_model"):
        measure_speed(["no_such_model"], progress=None)


def test_merge_speed_replaces_a_model_and_keeps_the_others():
    old = [{"model": "unet", "ms_64": "1"}, {"model": "fcn8s", "ms_64": "2"}]
    merged = merge_speed(old, [{"model": "unet", "ms_64": "3"}])
    assert merged == [{"model": "fcn8s", "ms_64": "2"}, {"model": "unet", "ms_64": "3"}]


def test_run_speed_times_the_default_rows_and_draws_the_plot(tmp_path):
    write_results([_zoo_row("fcn8s"), _zoo_row("fcn8s:paper"), _zoo_row("unet", "thin")],
                  tmp_path)
    csv_path, png_path = run_speed(out=tmp_path)
    assert [r["model"] for r in read_results(csv_path)] == ["fcn8s"]   # no preset, no thin
    assert png_path.stat().st_size > 0


def test_run_speed_without_default_rows_says_what_to_run(tmp_path):
    write_results([_zoo_row("unet", "thin")], tmp_path)
    with pytest.raises(ValueError, match="edu-seg zoo --models"):
        run_speed(out=tmp_path)


def test_plot_needs_a_model_with_both_rows(tmp_path):
    with pytest.raises(ValueError, match="both"):
        plot_speed_accuracy([_zoo_row("unet")], [{"model": "fcn8s", "ms_64": "1"}])
    speed = write_speed([{"model": "unet", "ms_64": "1.5", "ms_256": "20", "cpu": "x",
                          "threads": "2", "date": "d"}], tmp_path)
    fig = plot_speed_accuracy([_zoo_row("unet")], read_results(speed))
    assert len(fig.axes) == 2                                          # one per size


def test_cli_zoo_plot_trains_nothing_and_writes_both_files(tmp_path, capsys):
    write_results([_zoo_row("fcn8s")], tmp_path)
    assert cli.main(["zoo", "--plot", "--out", str(tmp_path), "--threads", "1"]) == 0
    assert "speed_accuracy.png" in capsys.readouterr().out
    assert (tmp_path / "speed.csv").exists()
    assert read_results(tmp_path / "results.csv")[0]["miou"] == "0.9000"  # untouched
