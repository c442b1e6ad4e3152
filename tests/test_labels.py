"""Orders and labels shared by tables and figures."""

import math

from roleprobe.results.labels import (
    condition_label,
    condition_rank,
    domain_order,
    role_domain,
    role_order,
    significance_stars,
)


def test_significance_stars():
    assert [significance_stars(p) for p in (0.0009, 0.001, 0.009, 0.04, 0.05, math.nan)] == [
        "***",
        "**",
        "**",
        "*",
        "",
        "",
    ]


def test_roles_and_domains_in_catalogue_order():
    # catalogue order: economist (econ), lawyer (law), nurse (medicine); unknown roles last
    assert role_order(["nurse", "zebra", "lawyer", "court jester", "economist", "nurse"]) == [
        "economist",
        "lawyer",
        "nurse",
        "court jester",
        "zebra",
    ]
    assert domain_order(["medicine", "other", "law", "medicine"]) == ["law", "medicine", "other"]
    assert role_domain("lawyer") == "law" and role_domain("court jester") is None


def test_condition_labels_and_their_order():
    pairs = [("persona", math.nan), ("addition", 3.0), ("ablation", None), ("addition", 1.0)]
    assert [condition_label(c, a) for c, a in pairs] == ["persona", "α=3", "ablation", "α=1"]
    assert condition_label("clamp", 2.0) == "clamp α=2"
    ordered = sorted(pairs, key=lambda ca: condition_rank(*ca))
    assert [condition_label(c, a) for c, a in ordered] == ["α=1", "α=3", "ablation", "persona"]
