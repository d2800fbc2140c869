import pandas as pd

from bench.report.plots import ACCURACY, pareto_front


def test_pareto_front_keeps_only_undominated_points():
    points = pd.DataFrame({
        "model": ["fast-weak", "slow-strong", "dominated", "fast-strong", "slowest"],
        "latency_p50_ms": [0.1, 10.0, 5.0, 1.0, 20.0],
        ACCURACY: [0.01, 0.06, 0.02, 0.05, 0.055],
    })
    front = pareto_front(points)
    assert list(front["model"]) == ["fast-weak", "fast-strong", "slow-strong"]
