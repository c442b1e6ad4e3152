"""The role catalogue of the role-vectors paper: 29 roles in 8 domains, and their MMLU subjects.

Roles are grouped by the domain whose MMLU questions they are expected to help with (the
paper's "in-domain" cells). Domains are unions of MMLU subjects, following the question
sample of Zheng et al. that the paper evaluates on, so any domain split can be rebuilt from
the full MMLU release.

Example:
    >>> [r.name for r in list_roles(domain="law")]
    ['bailiff', 'lawyer']
    >>> get_role("lawyer").domain
    'law'
"""

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

# domain -> roles, in the paper's order (the MANIFEST of its published data)
ROLE_DOMAINS: dict[str, tuple[str, ...]] = {
    "econ": ("economic researcher", "economist", "financial analyst"),
    "eecs": (
        "electronics technician",
        "data scientist",
        "electrical engineer",
        "software engineer",
        "web developer",
    ),
    "law": ("bailiff", "lawyer"),
    "math": ("data analyst", "mathematician", "statistician"),
    "medicine": ("nurse", "doctor", "physician", "dentist", "surgeon"),
    "natural_science": ("geneticist", "biologist", "physicist", "teacher", "chemist", "ecologist"),
    "politics": ("politician", "sheriff", "enthusiast", "partisan"),
    "psychology": ("psychologist",),
}

# domain -> MMLU subjects (the subjects of the paper's target_test_<domain>.json files)
DOMAIN_SUBJECTS: dict[str, tuple[str, ...]] = {
    "econ": (
        "econometrics",
        "high_school_macroeconomics",
        "high_school_microeconomics",
        "management",
        "professional_accounting",
    ),
    "eecs": ("college_computer_science", "electrical_engineering", "high_school_computer_science"),
    "law": ("international_law", "professional_law"),
    "math": ("college_mathematics", "high_school_mathematics", "high_school_statistics"),
    "medicine": ("clinical_knowledge", "college_medicine", "professional_medicine"),
    "natural_science": (
        "college_biology",
        "college_chemistry",
        "college_physics",
        "high_school_biology",
        "high_school_chemistry",
        "high_school_physics",
    ),
    "politics": ("high_school_government_and_politics", "us_foreign_policy"),
    "psychology": ("high_school_psychology", "professional_psychology"),
}

DOMAINS: tuple[str, ...] = tuple(ROLE_DOMAINS)


@dataclass(frozen=True)
class Role:
    """A role and the domain it belongs to.

    Attributes:
        name: the role as the paper writes it (lower case, spaces allowed).
        domain: one of :data:`DOMAINS`.
    """

    name: str
    domain: str

    @property
    def file_stem(self) -> str:
        """The role's name in file names (spaces become underscores)."""
        return role_file_stem(self.name)

    @property
    def subjects(self) -> tuple[str, ...]:
        """The MMLU subjects of the role's domain."""
        return DOMAIN_SUBJECTS[self.domain]


ROLES: tuple[Role, ...] = tuple(
    Role(name, domain) for domain, names in ROLE_DOMAINS.items() for name in names
)
_BY_NAME = {role.name: role for role in ROLES}


def role_file_stem(name: str) -> str:
    """A role name as used in file names: ``"data analyst"`` -> ``"data_analyst"``."""
    return name.replace(" ", "_")


def list_roles(domain: str | None = None) -> list[Role]:
    """All 29 roles in domain order, or those of one domain."""
    if domain is None:
        return list(ROLES)
    check_domain(domain)
    return [role for role in ROLES if role.domain == domain]


def check_domain(domain: str) -> str:
    """Return ``domain`` if it is known; otherwise raise, listing the domains."""
    if domain not in ROLE_DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; the domains are {', '.join(DOMAINS)}")
    return domain


def get_role(name: str) -> Role:
    """Look a role up by name (case and ``_``/space insensitive), suggesting close names."""
    key = name.strip().lower().replace("_", " ") if isinstance(name, str) else name
    if key in _BY_NAME:
        return _BY_NAME[key]
    close = difflib.get_close_matches(str(key), list(_BY_NAME), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown role {name!r}{hint} (see roleprobe.list_roles())")


def resolve_roles(roles: str | Sequence[str] | None) -> list[str]:
    """Canonical role names: ``None`` means all 29, a string means one role."""
    if roles is None:
        return [role.name for role in ROLES]
    if isinstance(roles, str):
        roles = [roles]
    names = [get_role(name).name for name in roles]
    if not names:
        raise ValueError("no roles given (the role list is empty)")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"roles listed more than once: {duplicated}")
    return names
