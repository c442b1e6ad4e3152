# %% [markdown]
# # 10 · Persona vs addition: every role on its own paper domain
#
# The paper compares stating the role in the prompt ("You are a lawyer.", `rp.Persona`) with
# adding the role's direction to the residual stream (`rp.Addition`). Here both run for
# all 29 roles, each on the paper's test questions of its own domain
# (`rp.load_benchmark("paper", ...)`, 2,457 questions; every role of a domain answers the
# same questions, so the full grid is about 9,700 question-evaluations per condition):
#
# * **baseline**: the model as it is (one evaluation per domain, shared by its roles);
# * **persona**: `rp.Persona(role)` (a system prompt where the template has one);
# * **addition**: the role's raw difference-of-means direction (built-in prompts, position
#   -1) added at one fixed layer (`--layer`, default the middle layer, `n_layers // 2`)
#   with `α` in `--alphas` (default 1 and 3), at every position (the paper's operator).
#
# Per role, each condition is compared with the domain's baseline on the same items
# (`rp.compare`: paired bootstrap CIs, McNemar / permutation tests). **Read the
# correct-letter log-prob first**: SmolLM2-135M answers these questions at chance
# (≈ 25 %), so accuracy changes are mostly letter-bias noise, while the mean change of the
# correct letter's log-prob still says whether a condition pushes towards the answer.
#
# The run is resumable: each domain's baseline and each role's conditions are written as a
# CSV part under `OUT/10_persona_parts/` as soon as they finish (a crash loses at most one
# role; rerunning skips finished parts). Roles run round-robin over the domains, so a run
# cut short still covers all eight. `--per-domain N` keeps a seeded sample of N questions
# per domain (the same items for every role of the domain).
#
# Run:
#
# ```bash
# .venv/bin/python analyses/10_persona_29.py --benchmark paper                 # full grid
# .venv/bin/python analyses/10_persona_29.py --benchmark paper --per-domain 64 # a sample
# .venv/bin/python analyses/10_persona_29.py --model tiny-random --quick --out /tmp/f
# ```
#
# Writes `10_persona_vs_addition.csv` (one row per role and condition), its figure
# `10_persona_vs_addition` (Δ correct-letter log-prob per role, grouped by domain, with
# 95 % CIs) and `10_persona_by_domain.csv` (means per domain).

# %%
import time
from collections.abc import Callable
from pathlib import Path

import _common
import pandas as pd
import torch

import roleprobe as rp
from roleprobe.results import plotting

cli = _common.parser("Persona vs activation addition for every role on its own domain.")
cli.add_argument("--layer", type=int, default=None, help="addition layer (default: middle)")
cli.add_argument("--alphas", default="1,3", help="comma-separated addition strengths")
cli.add_argument("--per-domain", type=int, default=0, help="questions per domain (0: all)")
cli.add_argument("--prompts", default="builtin", help="direction prompts: builtin or paper")
cli.add_argument("--batch-size", type=int, default=16)
cli.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's own)")
cli.add_argument("--parts", type=Path, default=None, help="parts folder (default OUT/10_…)")
cli.set_defaults(benchmark="paper")
args = _common.parse(cli)
if args.threads:
    torch.set_num_threads(args.threads)
write = _common.figure_writer(args)
start = time.perf_counter()
parts = args.parts or args.out / "10_persona_parts"
parts.mkdir(parents=True, exist_ok=True)
model = _common.load_model(args)
layer = args.layer if args.layer is not None else int(model.cfg.n_layers) // 2
alphas = [float(a) for a in _common.split_list(args.alphas) or []]
bench = _common.load_benchmark(args)


def domain_questions(domain: str) -> rp.MultipleChoice:
    """The domain's questions (a seeded sample of ``--per-domain`` of them)."""
    sub = bench.subset(domain=domain)
    if args.per_domain and len(sub) > args.per_domain:
        items = sub.items.sample(args.per_domain, random_state=args.seed).sort_index()
        sub = rp.MultipleChoice(
            items.reset_index(drop=True), f"{sub.name}|n{args.per_domain}", sub.split
        )
    return sub


# roles round-robin over domains: a run cut short still covers every domain
by_domain = {d: [r.name for r in rp.list_roles(domain=d)] for d in rp.DOMAINS}
wanted = set(_common.roles(args, None) or [r.name for r in rp.ROLES])
if args.quick:
    wanted = {names[0] for names in by_domain.values()}
order: list[str] = []
for i in range(max(len(v) for v in by_domain.values())):
    order += [names[i] for names in by_domain.values() if i < len(names) and names[i] in wanted]
print(f"{len(order)} roles, addition at layer {layer} with alphas {alphas}; parts in {parts}")

# %% [markdown]
# Directions (position -1, the addition layer only) are computed once and saved with the
# parts, so a resumed run adds the same vectors.

# %%
direction_dir = parts / "directions"
if (direction_dir / "directions.json").exists():
    rd = rp.RoleDirections.load(direction_dir, model)
else:
    source = args.data / "role-vectors-paper" if args.prompts == "paper" else args.prompts
    rd = rp.compute_directions(
        model,
        roles=[r.name for r in rp.ROLES],
        source="paper" if args.prompts == "paper" else source,
        data_dir=source if args.prompts == "paper" else None,
        positions=[-1],
        layers=[layer],
        batch_size=args.batch_size,
        progress=args.progress,
    )
    rd.save(direction_dir)
if layer not in rd.layers:
    raise SystemExit(f"{direction_dir} holds layers {rd.layers}, not {layer}: use another --parts")


def write_part(df: pd.DataFrame, path: Path) -> None:
    """Write a CSV part atomically (a crash never leaves half a part)."""
    tmp = path.with_suffix(".tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)


def run_part(path: Path, make: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """The part at ``path``, computed and written unless it exists."""
    if path.exists():
        return pd.read_csv(path)
    t0 = time.perf_counter()
    df = make()
    write_part(df, path)
    print(f"  {path.name}: {len(df)} rows in {time.perf_counter() - t0:.0f} s")
    return df


evaluate = dict(batch_size=args.batch_size, progress=args.progress)
baselines: dict[str, pd.DataFrame] = {}
results: dict[str, pd.DataFrame] = {}
for role in order:
    domain = rp.get_role(role).domain
    questions = domain_questions(domain)
    if domain not in baselines:
        baselines[domain] = run_part(
            parts / f"baseline_{domain}.csv",
            lambda q=questions, d=domain: rp.evaluate(model, q, None, **evaluate).assign(
                persona_domain=d
            ),
        )

    def conditions(q: rp.MultipleChoice = questions, r: str = role) -> pd.DataFrame:
        frames = [rp.evaluate(model, q, rp.Persona(r), **evaluate).assign(alpha=float("nan"))]
        d = rd.vector(r, layer, -1)
        for alpha in alphas:
            added = rp.evaluate(model, q, rp.Addition(d, layer, alpha), **evaluate)
            frames.append(added.assign(condition="addition", role=r, alpha=alpha))
        return pd.concat(frames, ignore_index=True)

    results[role] = run_part(parts / f"role_{_common.slug(role)}.csv", conditions)
    print(f"{role} ({domain}) done at {time.perf_counter() - start:.0f} s")

# %% [markdown]
# ## The comparison table
#
# One row per role and condition: baseline and condition accuracy (fractional tie credit),
# the change with its paired bootstrap CI and McNemar p, and the mean change of the
# correct-letter log-prob with its CI and permutation p.

# %%
rows = []
for role, df in results.items():
    domain = rp.get_role(role).domain
    base = baselines[domain].sort_values("id").reset_index(drop=True)
    for (condition, alpha), part in df.groupby(["condition", "alpha"], dropna=False):
        other = part.sort_values("id").reset_index(drop=True)
        stats = rp.compare(base, other, n_boot=2000, n_perm=5000, seed=args.seed)
        label = "persona" if condition == "persona" else f"addition α={alpha:g}"
        rows.append({"role": role, "domain": domain, "condition": label, **stats.to_dict()})
table = pd.DataFrame(rows)
table["layer"] = layer
table = table.sort_values(["domain", "role", "condition"]).reset_index(drop=True)
_common.write_table(table, args.out, "10_persona_vs_addition")
by_domain_table = (
    table.groupby(["domain", "condition"])[["base_accuracy", "accuracy", "delta_logprob"]]
    .mean()
    .reset_index()
)
_common.write_table(by_domain_table, args.out, "10_persona_by_domain")
print(by_domain_table.to_string(index=False, float_format="%.3f"))

# %%
write(plotting.persona_vs_addition(table), "10_persona_vs_addition")
write(plotting.persona_vs_addition(table, "delta_accuracy"), "10_persona_vs_addition_accuracy")
print(f"done in {time.perf_counter() - start:.0f} s")
