import json

import pytest

import roleprobe as rp
from roleprobe.data.roles import DOMAIN_SUBJECTS, ROLE_DOMAINS, get_role, list_roles, resolve_roles


def test_29_roles_in_8_domains():
    assert len(rp.ROLES) == 29 and len(rp.DOMAINS) == 8
    assert len({r.name for r in rp.ROLES}) == 29
    assert [r.name for r in list_roles("law")] == ["bailiff", "lawyer"]
    assert get_role("data_analyst").subjects == DOMAIN_SUBJECTS["math"]


def test_catalogue_matches_the_papers_manifest(paper_dir):
    manifest = json.loads((paper_dir / "MANIFEST.json").read_text())
    assert {d: list(r) for d, r in ROLE_DOMAINS.items()} == manifest["role_to_domain"]
    for domain, subjects in DOMAIN_SUBJECTS.items():
        questions = json.loads((paper_dir / "tests" / f"target_test_{domain}.json").read_text())
        assert sorted({q["subject"] for q in questions}) == list(subjects), domain


def test_unknown_role_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown role 'lawyr'.*did you mean 'lawyer'"):
        get_role("lawyr")
    with pytest.raises(ValueError, match="unknown domain 'astro'"):
        list_roles("astro")


def test_resolve_roles():
    assert resolve_roles(None) == [r.name for r in rp.ROLES]
    assert resolve_roles("Data Analyst") == ["data analyst"]
    with pytest.raises(ValueError, match="more than once"):
        resolve_roles(["nurse", "nurse"])
    with pytest.raises(ValueError, match="empty"):
        resolve_roles([])
