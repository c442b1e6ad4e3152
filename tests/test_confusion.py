import pytest
import torch

import roleprobe as rp
from roleprobe.vectors.confusion import (
    RULES,
    confusion_counts,
    one_vs_rest_auroc,
    role_confusion,
)

WORDS = ["apple", "river", "stone", "cloud", "paper", "music", "glass", "horse", "bread", "light"]
MARKERS = {"alpha": "zzzz", "beta": "qqqq", "gamma": "xxxx"}


def test_confusion_counts_and_one_vs_rest_on_known_scores():
    scores = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [5.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 2])
    m = confusion_counts(scores, labels, 3)
    expected = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [0, 0, 1.0]], dtype=torch.float64)
    assert torch.equal(m, expected)
    ovr = one_vs_rest_auroc(scores, labels)
    # role 0: 3 vs (0, 5, 0): 2/3; role 1: (2, 0) vs (1, 0): 2.5/4; role 2: 1 vs (0, 1, 1): 2/3
    assert ovr.tolist() == pytest.approx([2 / 3, 0.625, 2 / 3])
    with pytest.raises(ValueError, match="role index 1"):
        one_vs_rest_auroc(scores, torch.tensor([0, 0, 0, 2]))


@pytest.fixture(scope="module")
def marker_prompts():
    roles = {role: [f"{m} {m} {w} {m} {w}" for w in WORDS] for role, m in MARKERS.items()}
    base = [f"Tell me about the {w} you saw today." for w in WORDS]
    return rp.custom_prompts(roles, base).split(0.3, seed=0)


def test_planted_markers_are_told_apart(tiny_model, marker_prompts):
    """Each role's prompts carry their own marker word: held out, each prompt is nearest its
    own role's direction and each direction singles its role out among the roles."""
    train, held = marker_prompts
    rd = rp.compute_directions(
        tiny_model, source=train, positions="instruction_mean", progress=False
    )
    rc = role_confusion(tiny_model, rd, held, progress=False)
    n_held = sum(len(p) for p in held.roles.values())
    assert rc.scores.shape == (2, n_held, 3, 1, 4)
    expected = [r for r, name in enumerate(rd.roles) for _ in held.roles[name].instructions]
    assert rc.labels.tolist() == expected
    for rule in RULES:
        assert rc.accuracy(rule)[0, 1] == 1.0
        assert torch.equal(
            rc.matrix(1, "instruction_mean", rule), torch.eye(3, dtype=torch.float64)
        )
    assert (rc.auroc[:, 0, 1] == 1.0).all()
    table = rc.to_dataframe()
    assert set(table["rule"]) == set(RULES) and table["chance"].tolist() == pytest.approx(
        [1 / 3] * len(table)
    )
    assert rc.most_confused(1, "instruction_mean").empty


def test_swapped_labels_are_caught(tiny_model, marker_prompts):
    """Held-out prompts given under the wrong role name land off the diagonal."""
    train, held = marker_prompts
    rd = rp.compute_directions(
        tiny_model, source=train, layers=[1], positions="instruction_mean", progress=False
    )
    swapped = rp.RolePrompts(
        {"alpha": held.roles["beta"], "beta": held.roles["alpha"], "gamma": held.roles["gamma"]},
        held.base,
    )
    rc = role_confusion(tiny_model, rd, swapped, progress=False)
    m = rc.matrix(1, "instruction_mean")
    assert m[0, 1] == 1.0 and m[1, 0] == 1.0 and m[2, 2] == 1.0
    assert rc.accuracy()[0, 0] == pytest.approx(len(held.roles["gamma"]) / rc.labels.numel())
    top = rc.most_confused(1, "instruction_mean", k=2)
    assert set(zip(top["true"], top["assigned"], strict=True)) == {
        ("alpha", "beta"),
        ("beta", "alpha"),
    }
    # alpha's direction ranks the real alpha prompts (now labelled beta) above its own
    assert rc.auroc[0, 0, 0] <= 0.5 and rc.auroc[2, 0, 0] == 1.0


def test_zero_directions_and_bad_arguments(tiny_model, marker_prompts):
    train, held = marker_prompts
    rd = rp.compute_directions(tiny_model, source=train, positions="last", progress=False)
    rc = role_confusion(tiny_model, rd, held, progress=False)
    assert torch.isnan(rc.accuracy()[0, 0]) and torch.isnan(rc.matrix(0, -1)).all()
    assert torch.isnan(rc.auroc[:, 0, 0]).all()
    with pytest.raises(ValueError, match="unknown rule"):
        rc.accuracy("euclid")
    with pytest.raises(ValueError, match="layer 7 is not in"):
        rc.matrix(7)
    with pytest.raises(ValueError, match="no held-out prompts for roles"):
        role_confusion(tiny_model, rd, held.subset(["alpha", "beta"]), progress=False)


def test_confusion_figure_groups_roles_by_domain():
    from roleprobe.results import plotting

    roles = ["nurse", "lawyer", "doctor"]
    domains = ["medicine", "law", "medicine"]
    m = torch.eye(3, dtype=torch.float64)
    m[0, 2], m[0, 0] = 0.75, 0.25
    fig = plotting.confusion_figure(m, roles, domains)
    heat = fig.data[0]
    order = list(heat.y)
    assert order == list(heat.x) and set(order) == set(roles)
    assert order.index("nurse") < order.index("doctor") or order.index("lawyer") < order.index(
        "nurse"
    )
    doms = [domains[roles.index(r)] for r in order]
    assert doms == sorted(doms, key=doms.index)  # each domain contiguous
    i, j = order.index("nurse"), order.index("doctor")
    assert heat.z[i][j] == 0.75
    assert len(fig.layout.shapes) == 2  # one domain boundary, vertical and horizontal
    with pytest.raises(ValueError, match="one row, column and domain per role"):
        plotting.confusion_figure(m, roles, domains[:2])
