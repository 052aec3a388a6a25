import pytest
import torch

from cnnlab.analysis.ood import (
    auroc,
    fpr_at_tpr,
    load_ood,
    ood_flags,
    ood_score,
    refuse_threshold,
    save_ood,
    threshold_at_tpr,
)
from cnnlab.errors import CnnlabError


def test_auroc_extremes_and_ties():
    a = torch.tensor([3.0, 4.0, 5.0])
    assert auroc(a, a - 10) == 1.0 and auroc(a - 10, a) == 0.0
    assert auroc(torch.ones(5), torch.ones(7)) == pytest.approx(0.5)


def test_scores_and_threshold(tmp_path):
    logits = torch.tensor([[10.0, 0.0], [0.1, 0.0]])
    msp = ood_score(logits, "msp")
    assert msp[0] > 0.99 and 0.5 < msp[1] < 0.55
    e = ood_score(logits, "energy")
    assert e[0] > e[1]
    s = torch.linspace(0, 1, 101)
    assert threshold_at_tpr(s) == pytest.approx(0.05)
    assert fpr_at_tpr(s, s) == pytest.approx(0.95, abs=0.01)
    save_ood(tmp_path, "msp", 0.6)
    ood = load_ood(tmp_path)
    scores, flags = ood_flags(logits, ood)
    assert flags.tolist() == [False, True]
    with pytest.raises(CnnlabError, match="unknown OOD score"):
        ood_score(logits, "bogus")


def test_a_threshold_worse_than_chance_is_refused():
    assert refuse_threshold("energy", {"noise": {"auroc": 0.93}}) is None
    why = refuse_threshold("energy", {"noise": {"auroc": 0.075}, "cifar10": {"auroc": 0.8}})
    assert "no better than chance" in why and "noise 0.075" in why and "cifar10" not in why
