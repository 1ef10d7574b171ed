import pytest

from keras_rec import plots

CURVE = [
    {"epoch": 1, "seconds": 60.0, "recall@20": 0.06, "ndcg@20": 0.05},
    {"epoch": 2, "seconds": 120.0, "recall@20": 0.08, "ndcg@20": 0.07},
    {"epoch": 3, "seconds": 190.0, "recall@20": 0.09, "ndcg@20": 0.07},
]


def test_curve_metric_prefers_the_monitor_then_the_protocols_headline():
    assert plots.curve_metric(CURVE, "ndcg@20") == "ndcg@20"
    assert plots.curve_metric(CURVE, None) == "recall@20"
    assert plots.curve_metric(CURVE, "hr@10") == "recall@20"  # not in the curve
    assert plots.curve_metric([{"epoch": 1, "seconds": 1.0, "mrr@5": 0.1}]) == "mrr@5"
    assert plots.curve_metric([]) is None


def test_learning_curve_is_written_as_png(tmp_path):
    path = plots.save_learning_curve(
        CURVE, "recall@20", tmp_path / "sub" / "curve.png", "run", reference=0.18
    )
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("curve", [CURVE[:1], [], [{"epoch": 1, "seconds": 1.0}] * 2])
def test_learning_curve_needs_two_points_of_the_metric(tmp_path, curve):
    assert plots.save_learning_curve(curve, "recall@20", tmp_path / "c.png") is None
    assert not (tmp_path / "c.png").exists()
