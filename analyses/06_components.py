# %% [markdown]
# # 06 · Which components write a role direction?
#
# The role direction `d` at layer `L` (role mean minus generic mean of `resid_pre[L]`) is a
# sum of what every earlier component wrote: the embedding, every attention head (its
# mixed values `z` through its slice of `W_O`) and every MLP. Projected on the unit
# direction `d̂`, the terms sum exactly to `|d|` (`rp.component_attribution`; float64
# streaming sums, nothing per prompt kept). A large positive term is a component that
# writes the role direction; a negative one writes against it.
#
# Post-norm models (Gemma-2/3) get one attention and one MLP term per block instead of
# per-head terms (the post-norm makes heads non-additive).
#
# Run:
#
# ```bash
# .venv/bin/python analyses/06_components.py                      # 3 roles, layer n/2
# .venv/bin/python analyses/06_components.py --roles "lawyer,chemist" --layer 20
# .venv/bin/python analyses/06_components.py --model tiny-random --quick --out /tmp/f
# ```
#
# Writes `06_attribution_{role}` (layer × head heatmaps, MLP as its own column),
# `06_top_writers` (role × component shares) and the tables `06_components.csv` (every
# term) and `06_top_writers.csv`.

# %%
import time

import _common

import roleprobe as rp
from roleprobe.results import plotting
from roleprobe.results.tables import top_writers
from roleprobe.vectors.components import component_attribution

DEFAULT_ROLES = ("lawyer", "nurse", "mathematician")

cli = _common.parser("Component attribution of role directions (heads, MLPs, embedding).")
cli.add_argument("--layer", type=int, default=None, help="decomposed layer (default: n/2)")
cli.add_argument("--source", default="builtin", help="prompts: builtin, paper or a folder")
cli.add_argument("--top-k", type=int, default=5, help="top writers per role")
cli.add_argument("--batch-size", type=int, default=16)
args = _common.parse(cli)
write = _common.figure_writer(args)
start = time.perf_counter()
model = _common.load_model(args)
roles = _common.roles(args, DEFAULT_ROLES[:2] if args.quick else DEFAULT_ROLES)
layer = args.layer if args.layer is not None else int(model.cfg.n_layers) // 2
source = args.data / "role-vectors-paper" if args.source == "paper" else args.source
prompts = rp.load_prompts(source, roles)
if args.quick:
    prompts = rp.RolePrompts(
        {r: p.sample(min(8, len(p)), args.seed) for r, p in prompts.roles.items()},
        prompts.base.sample(min(16, len(prompts.base)), args.seed),
        prompts.source,
    )
print(f"roles {roles}, layer {layer}, {len(prompts.base)} generic prompts")

# %% [markdown]
# ## The decomposition (every post-instruction position)

# %%
df = component_attribution(model, prompts, layer, batch_size=args.batch_size)
print(f"per head: {df.attrs['per_head']}; largest |d̂·d - Σ terms|: {df.attrs['residual']:.2e}")
sums = df.groupby(["role", "position"])["value"].sum()
print(sums.unstack("position").round(3))
_common.write_table(df, args.out, "06_components")

# %% [markdown]
# ## Layer × head maps at the last position

# %%
for role in roles:
    write(
        plotting.attribution_heatmap(df, role, position=-1), f"06_attribution_{_common.slug(role)}"
    )

# %% [markdown]
# ## Top writers

# %%
top = top_writers(df, k=args.top_k, position=-1)
_common.write_table(top, args.out, "06_top_writers")
write(plotting.top_writers_figure(df, k=args.top_k, position=-1), "06_top_writers")
print(top[["role", "rank", "component", "value", "share"]].to_string(index=False))
kinds = df[df["position"] == -1].groupby(["role", "kind"])["share"].sum().unstack("kind")
print("share of d̂·d by kind of component (position -1):")
print(kinds.round(3))
print(f"done in {time.perf_counter() - start:.0f} s")
