"""Small labels: metric_plot panel titles give the unit and the direction of each metric ("nrmse" alone did not
say that lower is better), and mean_sd prints "n/a" for the sd of a single value instead of "± 0.000"."""

from __future__ import annotations

from medgan.eval.figures import metric_plot
from medgan.eval.synthetic import mean_sd


def test_metric_plot_titles_give_unit_and_direction():
    rows = [
        {"scan_id": f"s{i}", "method": m, "psnr": 30.0 + i, "nrmse": 0.1, "mae": 2.0, "ssim": 0.9}
        for i in range(3)
        for m in ("SR", "cubic")
    ]
    fig = metric_plot(rows, ["psnr", "nrmse", "mae", "ssim"], methods=["SR", "cubic"])
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == [
        "PSNR (dB, higher is better)",
        "NRMSE (lower is better)",
        "MAE (intensity units, lower is better)",
        "SSIM (higher is better)",
    ]


def test_mean_sd_of_one_value_has_no_sd():
    assert mean_sd([0.5]) == "0.500 ± n/a"
    assert mean_sd([0.5, float("nan")], ".2f") == "0.50 ± n/a"
    assert mean_sd([1.0, 2.0, 3.0], ".2f") == "2.00 ± 1.00"
