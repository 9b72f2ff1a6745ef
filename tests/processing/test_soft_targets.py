"""VQA soft targets (vlparse.processing.answers): the paper's scheme, the alternatives, and the
official metric that none of them changes."""

from __future__ import annotations

import typing

import pytest

from vlparse.config import FinetuneConfig, VQATaskConfig, load_config
from vlparse.eval.vqa import vqa_score
from vlparse.processing.answers import SOFT_TARGETS, soft_score, soft_scores

# humans (of 10) who gave the answer -> target, written out from each scheme's definition
PAPER = [0.0, 0.3, 0.6, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # [24]: 0 / 0.3 / 0.6 / 0.9 / 1
THIRDS = [0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
# mean over the 10 leave-one-out subsets of min(1, matches / 3): n of them drop a match
LOO = [0.0, 0.3, 0.6, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(("variant", "table"), [("paper_0_3", PAPER),
                                                ("min_n_over_3", THIRDS),
                                                ("leave_one_out", LOO)])
def test_each_scheme_by_count(variant, table):
    assert [soft_score(n, 10, variant) for n in range(11)] == pytest.approx(table, abs=1e-12)
    answers = ["dog"] * 2 + ["cat"] * 7 + ["two"]  # "two" normalises to "2"
    got = soft_scores(answers, ["cat", "dog", "2", "bird"], variant)
    assert got.tolist() == pytest.approx([table[7], table[2], table[1], 0.0], abs=1e-6)


def test_the_paper_and_leave_one_out_differ_for_fewer_than_ten_humans():
    # the paper's scheme depends on the count only; the metric's on the number of humans too
    assert soft_score(2, 3, "paper_0_3") == pytest.approx(0.6)
    assert soft_score(2, 3, "leave_one_out") == pytest.approx((2 * 1 / 3 + 1 * 2 / 3) / 3)
    with pytest.raises(ValueError, match="paper_0_3, min_n_over_3, leave_one_out"):
        soft_score(1, 10, "count")


def test_the_metric_does_not_follow_the_targets():
    answers = ["yes"] * 3 + ["no"] * 7
    assert vqa_score("yes", answers) == pytest.approx(0.9)
    assert vqa_score("no", answers) == 1.0


def test_the_recipes_choose_the_scheme():
    names = typing.get_args(typing.get_type_hints(VQATaskConfig)["soft_targets"])
    assert names == SOFT_TARGETS
    assert VQATaskConfig().soft_targets == "paper_0_3"
    assert load_config("vqa", cls=FinetuneConfig).task.soft_targets == "paper_0_3"
    # the quickstart's VQA fine-tuning keeps the targets it was measured with
    assert load_config("vqa_world", cls=FinetuneConfig).task.soft_targets == "min_n_over_3"
    with pytest.raises(Exception, match="soft_targets"):
        load_config("vqa", ["task.soft_targets=count"], cls=FinetuneConfig)

