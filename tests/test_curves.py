"""singer_rec.curves: the curves of a run's own record (no MLflow) and their figure."""
import pytest

from singer_rec.curves import curves_figure, rl_curves, sft_curves


def test_sft_curves_take_each_evaluation_and_skip_missing_values():
    valid_curve = [
        {"step": 4, "train_loss": 3.5, "valid_loss": 3.0, "NDCG@10": 0.1, "HR@10": 0.2, "HR@5": 0.1},
        {"step": 8, "train_loss": 2.5, "valid_loss": 2.75, "NDCG@10": 0.3, "HR@10": 0.5},
        {"step": 9, "train_loss": None, "valid_loss": 2.5},  # no ranking sample at this evaluation
    ]
    assert sft_curves(valid_curve) == {
        "train_loss": [(4, 3.5), (8, 2.5)],
        "valid_loss": [(4, 3.0), (8, 2.75), (9, 2.5)],
        "valid_NDCG@10": [(4, 0.1), (8, 0.3)],
        "valid_HR@10": [(4, 0.2), (8, 0.5)],
    }


def test_rl_curves_take_reward_hit_rate_and_kl_per_step():
    history = [{"step": 1, "mean_reward": -0.5, "hit_rate": 0.25, "kl": 0.0, "loss": 1.0},
               {"step": 2, "mean_reward": 0.5, "hit_rate": 0.75, "kl": 0.125, "loss": 0.5}]
    assert rl_curves(history) == {"mean_reward": [(1, -0.5), (2, 0.5)], "hit_rate": [(1, 0.25), (2, 0.75)],
                                  "kl": [(1, 0.0), (2, 0.125)]}
    assert rl_curves([]) == {}


def test_the_figure_has_one_panel_per_curve_and_refuses_none():
    import matplotlib.pyplot as plt

    figure = curves_figure(rl_curves([{"step": 1, "mean_reward": 0.0, "hit_rate": 0.0, "kl": 0.0}]), title="rl")
    assert [axis.get_title() for axis in figure.axes if axis.get_visible()] == ["hit_rate", "kl", "mean_reward"]
    plt.close(figure)
    with pytest.raises(ValueError, match="no curve to draw"):
        curves_figure({})
