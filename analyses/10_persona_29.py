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
# correct letter's log-prob still says whether a condition pushes towards the answer —
# read beside `delta_entropy`: at chance, a sharper letter distribution alone lowers the
# mean correct-letter log-prob (on SmolLM2 the two correlate at r = 0.90 over the rows).
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
# .venv/bin/python analyses/10_persona_29.py --benchmark paper --per-domain 96 # figures/ (63 min)
# .venv/bin/python analyses/10_persona_29.py --model tiny-random --quick --out /tmp/f
# ```
#
# Writes `10_persona_vs_addition.csv` (one row per role and condition), its figure
# `10_persona_vs_addition` (Δ correct-letter log-prob per role, grouped by domain, with
# 95 % CIs) and `10_persona_by_domain.csv` (means per domain).

# %%
import time
from pathlib import Path

import _common
import torch

import roleprobe as rp
from roleprobe.experiments.persona_compare import by_domain, persona_vs_addition
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
by_role = {d: [r.name for r in rp.list_roles(domain=d)] for d in rp.DOMAINS}
roles = _common.roles(args, None) or [r.name for r in rp.ROLES]
if args.quick:
    roles = [names[0] for names in by_role.values()]
print(f"{len(roles)} roles, addition at layer {layer} with alphas {alphas}; parts in {parts}")

# %% [markdown]
# Directions (position -1, the addition layer only) are computed once and saved with the
# parts, so a resumed run adds the same vectors.

# %%
direction_dir = parts / "directions"
if (direction_dir / "directions.json").exists():
    rd = rp.RoleDirections.load(direction_dir, model)
else:
    paper = args.prompts == "paper"
    rd = rp.compute_directions(
        model,
        roles=[r.name for r in rp.ROLES],
        source="paper" if paper else args.prompts,
        data_dir=args.data / "role-vectors-paper" if paper else None,
        positions=[-1],
        layers=[layer],
        batch_size=args.batch_size,
        progress=args.progress,
    )
    rd.save(direction_dir)
if layer not in rd.layers:
    raise SystemExit(f"{direction_dir} holds layers {rd.layers}, not {layer}: use another --parts")

# %% [markdown]
# ## The comparison table
#
# `persona_vs_addition` writes each domain's baseline and each role's conditions as a part
# as soon as they finish, and reads finished parts instead of recomputing them. One row per
# role and condition: baseline and condition accuracy (fractional tie credit), the change
# with its paired bootstrap CI and McNemar p, and the mean change of the correct-letter
# log-prob with its CI and permutation p.

# %%
table = persona_vs_addition(
    model,
    rd,
    bench,
    layer,
    roles=roles,
    alphas=alphas,
    per_domain=args.per_domain,
    parts=parts,
    batch_size=args.batch_size,
    seed=args.seed,
    progress=args.progress,
)
_common.write_table(table, args.out, "10_persona_vs_addition")
domains = by_domain(table)
_common.write_table(domains, args.out, "10_persona_by_domain")
print(domains.to_string(index=False, float_format="%.3f"))

# %%
write(plotting.persona_vs_addition(table), "10_persona_vs_addition")
write(plotting.persona_vs_addition(table, "delta_accuracy"), "10_persona_vs_addition_accuracy")
print(f"done in {time.perf_counter() - start:.0f} s")
