import math

import pytest

from singer_rec.decoding import PrefixTrie
from singer_rec.rl.curriculum import guide_length, guide_length_by_items, guided_prefix
from singer_rec.rl.rewards import (
    accuracy_rewards,
    group_rewards,
    is_hard,
    match_depth,
    rank_rewards,
    sid_level_rewards,
    title_prefix_rewards,
)

TARGET = (1, 2, 3)
# a hand-made group, beam order: miss at level 2, the target, miss at level 1, miss at level 3
GROUP = [(1, 5, 6), (1, 2, 3), (9, 2, 3), (1, 2, 4)]


def test_accuracy_and_rank_rewards_by_hand():
    assert accuracy_rewards(GROUP, TARGET) == [0.0, 1.0, 0.0, 0.0]
    rank = rank_rewards(GROUP, TARGET)
    assert rank[0] == pytest.approx(-1 / math.log(2))   # p=1: -1.4427
    assert rank[1] == 0.0                                # the target
    assert rank[2] == pytest.approx(-1 / math.log(4))   # p=3: -0.7213
    assert rank[3] == pytest.approx(-1 / math.log(5))   # p=4: -0.6213
    assert rank[0] == pytest.approx(-1.4426950408889634)


def test_match_depth_and_sid_level_reward():
    assert [match_depth(c, TARGET) for c in GROUP] == [1, 3, 0, 2]
    # 1 - 0.5^k for k = 1, 3, 0, 2
    assert sid_level_rewards(GROUP, TARGET, 0.5) == [0.5, 0.875, 0.0, 0.75]
    assert sid_level_rewards(GROUP, TARGET, 0.25) == [0.75, 1 - 0.25**3, 0.0, 0.9375]
    assert match_depth((1, 2), (1, 2, 3, 0)) == 2  # a suffix-less SID vs a 4-token one


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1, 1.5])
def test_decay_outside_open_interval_fails(decay):
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        sid_level_rewards(GROUP, TARGET, decay)


def test_group_rewards_per_variant():
    normal = GROUP
    hard = [(1, 5, 6), (1, 2, 4), (7, 7, 7)]  # guided continuations, none is the target
    assert not is_hard(normal, TARGET) and is_hard(hard, TARGET)
    l2, l4, l5 = 1 / math.log(2), 1 / math.log(4), 1 / math.log(5)
    assert group_rewards(normal, TARGET, False, "acc") == [0, 1, 0, 0]
    assert group_rewards(normal, TARGET, False, "acc+rank") == pytest.approx([-l2, 1, -l4, -l5])
    assert group_rewards(normal, TARGET, False, "full") == pytest.approx([-l2, 1, -l4, -l5])
    assert group_rewards(normal, TARGET, False, "sid-all") == pytest.approx([-l2 + 0.5, 1.875, -l4, -l5 + 0.75])
    assert group_rewards(hard, TARGET, True, "full", 0.5) == [0.5, 0.75, 0.0]
    assert group_rewards(hard, TARGET, True, "sid-all", 0.5) == [0.5, 0.75, 0.0]
    assert group_rewards(hard, TARGET, True, "acc") == [0, 0, 0]
    assert group_rewards(hard, TARGET, True, "acc+rank") == pytest.approx([-l2, -1 / math.log(3), -l4])
    # titles have no SID levels: a hard title sample keeps acc+rank
    assert group_rewards(hard, TARGET, True, "full", hierarchical=False) == pytest.approx([-l2, -1 / math.log(3), -l4])


def test_unknown_reward_variant_fails():
    with pytest.raises(ValueError, match="unknown reward variant 'sid'"):
        group_rewards(GROUP, TARGET, False, "sid")


def test_guide_length_at_chosen_steps():
    # T = 10 steps, L = 3 levels: floor((1 - t/10) * 3)
    assert [guide_length(t, 10, 3) for t in range(1, 11)] == [2, 2, 2, 1, 1, 1, 0, 0, 0, 0]
    assert guide_length(0, 10, 3) == 2  # capped at L - 1: something is always generated
    assert guide_length(1, 3, 3) == 2 and guide_length(2, 3, 3) == 1 and guide_length(3, 3, 3) == 0
    assert guide_length(5, 100, 4) == 3  # floor(0.95 * 4) = 3
    assert guided_prefix([11, 12, 13], 4, 10) == [11]
    with pytest.raises(ValueError, match="step must be in"):
        guide_length(11, 10, 3)


# a hard title sample: the target title (tokens + EOS 2) and three other titles, beam order
TITLE = (40, 41, 42, 43, 2)
TITLES = [(40, 41, 50, 2), (60, 2), (40, 41, 42, 51, 52, 2)]


def test_title_prefix_rewards_by_hand():
    assert [match_depth(c, TITLE) for c in TITLES] == [2, 0, 3]
    assert title_prefix_rewards(TITLES, TITLE, "prefix", 0.5) == [0.75, 0.0, 0.875]
    assert title_prefix_rewards(TITLES, TITLE, "prefix-share", 0.5) == [0.4, 0.0, 0.6]
    assert title_prefix_rewards([TITLE], TITLE, "prefix-share", 0.5) == [1.0]
    with pytest.raises(ValueError, match="kind must be"):
        title_prefix_rewards(TITLES, TITLE, "acc-rank", 0.5)


def test_group_rewards_title_variants():
    l2, l3, l4 = 1 / math.log(2), 1 / math.log(3), 1 / math.log(4)
    # the paper: a hard title sample gets acc+rank, blind to the target
    assert group_rewards(TITLES, TITLE, True, "full", hierarchical=False, title_reward="acc-rank") == pytest.approx([-l2, -l3, -l4])
    # target-aware: the matched title prefix stands in for the SID levels
    assert group_rewards(TITLES, TITLE, True, "full", hierarchical=False, title_reward="prefix") == [0.75, 0.0, 0.875]
    assert group_rewards(TITLES, TITLE, True, "full", hierarchical=False, title_reward="prefix-share") == [0.4, 0.0, 0.6]
    # normal title samples keep acc+rank under full, and add the title term under sid-all
    normal = [TITLES[0], TITLE]
    assert group_rewards(normal, TITLE, False, "full", hierarchical=False, title_reward="prefix") == pytest.approx([-l2, 1.0])
    assert group_rewards(normal, TITLE, False, "sid-all", hierarchical=False, title_reward="prefix-share") == pytest.approx([-l2 + 0.4, 2.0])
    # acc and acc+rank ignore the title reward; SID answers ignore it too
    assert group_rewards(TITLES, TITLE, True, "acc", hierarchical=False, title_reward="prefix") == [0, 0, 0]
    assert group_rewards([(1, 5, 6)], TARGET, True, "full", title_reward="prefix-share") == [0.5]
    with pytest.raises(ValueError, match="unknown title_reward 'prefx'"):
        group_rewards(TITLES, TITLE, True, "full", hierarchical=False, title_reward="prefx")


def test_guide_length_by_items_backs_off_to_a_prefix_with_enough_items():
    # level-1 code 1 holds 3 items; (1, 2) holds 2; (1, 5) holds 1; code 9 holds 1
    trie = PrefixTrie.build([(1, 2, 3), (1, 2, 4), (1, 5, 6), (9, 2, 3)], 20)

    def under(prefix):
        return trie.items_under(trie.walk(prefix))

    assert guide_length_by_items(2, (1, 2, 3), under, 2) == 2   # 2 items under (1, 2): kept
    assert guide_length_by_items(2, (1, 2, 3), under, 3) == 1   # 3 needed: back off to (1,)
    assert guide_length_by_items(2, (1, 5, 6), under, 2) == 1   # (1, 5) is the target alone
    assert guide_length_by_items(2, (9, 2, 3), under, 2) == 0   # (9,) is the target alone: no guide
    assert guide_length_by_items(1, (1, 5, 6), under, 4) == 0
    assert guide_length_by_items(0, (1, 2, 3), under, 2) == 0   # the schedule's 0 stays 0


def test_rollout_stats_count_the_groups_without_advantage():
    """A group whose rewards are all equal, or a one-item group, has zero advantage (Eq. 1): counted
    per step so that the RL history shows how much of a batch teaches nothing."""
    from singer_rec.rl.grpo import group_advantages
    from singer_rec.rl.report import summary_report
    from singer_rec.training.rl.rollouts import Group, rollout_stats

    def group(rewards, hard=False, guide=0):
        return Group([1], [[2]] * len(rewards), rewards, hard, not hard, guide, True)

    groups = [group([1.0, 0.0, -0.5]), group([0.0, 0.0], hard=True, guide=1), group([0.25], hard=True, guide=2),
              group([0.5, 0.5, 0.5, 0.75], hard=True)]
    assert [bool(group_advantages(g.rewards).abs().sum() == 0) for g in groups] == [False, True, True, False]
    stats = rollout_stats(groups)
    assert stats["zero_advantage"] == 2.0 and stats["prompts"] == 4.0 and stats["hard"] == 3.0
    assert stats["guide_sum"] == 3.0 and stats["rewards"] == 10.0

    def history(with_key):
        step = {"mean_reward": 0.0, "hit_rate": 0.5, "hard_fraction": 0.5, "guide_length": 1.0, "kl": 0.0,
                "entropy": 1.0, "clip_fraction": 0.0, "seconds_per_step": 1.0}
        return [{**step, "step": s, **({"zero_advantage_fraction": s / 10} if with_key else {})} for s in range(1, 11)]

    probe = {"before": {"rewards": [0.0, 1.0], "hit_rate": 0.5}, "after": {"rewards": [1.0, 1.0], "hit_rate": 1.0}}
    report = summary_report({"history": history(True), "total_steps": 10, "probe": probe})
    assert report["first_zero_advantage_fraction"] == 0.1 and report["last_zero_advantage_fraction"] == 1.0
    # a history recorded before the key existed (a resumed older run) leaves the key out
    older = summary_report({"history": history(False), "total_steps": 10, "probe": probe})
    assert "first_zero_advantage_fraction" not in older and older["first_hit_rate"] == 0.5
