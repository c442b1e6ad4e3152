# %% [markdown]
# # 08 · Shared and role-specific parts of the role directions
#
# Every raw role direction `d_r = mean(D_r) − mean(D_base)` carries a large component that
# all roles share ("a role prompt rather than a generic one"): on SmolLM2 the lawyer and the
# nurse direction read out the same patchscope text at α = 3 (analysis 04), and the raw
# role × role cosine map is nearly uniform where the mean-centred one is not (analysis 01).
# Here the split is made explicit (`roleprobe.vectors.decomposition`):
#
# * the shared direction `s = mean_r d_r` (`shared_direction`), per position and layer;
# * each role's specific part `e_r = d_r − s` (`specific_directions`, a `RoleDirections`
#   that steers, ablates and sweeps like the raw one; `rp.sweep(..., specific=True)` runs it
#   as its own source with its own controls);
# * the share of each role's direction that is shared, `cos²(d_r, s)` = the fraction of
#   `|d_r|²` along `s` (`shared_share`), and the pooled `|s|² / mean_r |d_r|²`
#   (`shared_fraction`, an exact split of the roles' mean squared norm).
#
# Run:
#
# ```bash
# .venv/bin/python analyses/08_shared_specific.py                 # all 29 built-in roles
# .venv/bin/python analyses/08_shared_specific.py --directions figures/directions
# .venv/bin/python analyses/08_shared_specific.py --model tiny-random --quick --out /tmp/f
# ```
#
# Writes `08_shared_share` (role × layer share, with the per-layer mean and pooled
# fraction), `08_cosine_decomposition` (raw vs specific-part cosine maps at one layer) and
# the tables `08_shared_share.csv`, `08_shared_fraction.csv`, `08_bands.csv`.

# %%
import time
from pathlib import Path

import _common
import pandas as pd
import torch

import roleprobe as rp
from roleprobe.results import plotting
from roleprobe.vectors.decomposition import (
    band_summary,
    shared_fraction,
    shared_share,
    specific_directions,
)

QUICK_ROLES = ("lawyer", "nurse", "mathematician", "economist")
POSITION = -1

cli = _common.parser("Shared vs role-specific parts of the role directions.")
cli.add_argument("--directions", type=Path, default=None, help="RoleDirections folder")
cli.add_argument("--layer", type=int, default=None, help="layer of the cosine maps (default: 15)")
cli.add_argument("--batch-size", type=int, default=16)
args = _common.parse(cli)
write = _common.figure_writer(args)
start = time.perf_counter()
model = _common.load_model(args)
n_layers = int(model.cfg.n_layers)
names = _common.roles(args, QUICK_ROLES if args.quick else None)

# %%
if args.directions is not None:
    rd = rp.RoleDirections.load(args.directions, model)
else:
    rd = rp.compute_directions(
        model,
        roles=names,
        positions=[POSITION],
        batch_size=args.batch_size,
        progress=args.progress,
    )
print(rd)
print(f"directions: {time.perf_counter() - start:.0f} s")

# %% [markdown]
# ## How much of each direction is shared, per layer
#
# `share = cos²(d_r, s)` per role and layer; `fraction = |s|² / mean_r |d_r|²` per layer.
# Layer bands are the model's thirds (early, middle, late). Layer 0's post-instruction
# directions are exactly zero (the template tokens' embeddings do not depend on the
# prompt): undefined, left out of the bands.

# %%
share = shared_share(rd)
pooled = shared_fraction(rd)
_common.write_table(share, args.out, "08_shared_share")
_common.write_table(pooled, args.out, "08_shared_fraction")
bands = band_summary(share, n_layers, "share").assign(measure="cos²(d_r, s), over roles")
pooled_bands = band_summary(pooled, n_layers, "fraction").assign(measure="|s|² / mean |d_r|²")
table = pd.concat([bands, pooled_bands], ignore_index=True)
_common.write_table(table, args.out, "08_bands")
print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
write(plotting.shared_share_figure(share, pooled, position=POSITION), "08_shared_share")

# %% [markdown]
# ## The roles' cosine map, raw and with the shared part removed
#
# The right panel is the cosine map of the specific parts `d_r − s` (equal to the
# mean-centred map of analysis 01): what distinguishes the roles once the shared component
# is gone.

# %%
layer = args.layer if args.layer is not None else min(15, n_layers - 1)
if len(rd.roles) >= 3:
    write(plotting.decomposition_cosine_maps(rd, layer, POSITION), "08_cosine_decomposition")
    spec = specific_directions(rd)
    raw_cos = rd.cosine_similarity(layer, POSITION)
    spec_cos = spec.cosine_similarity(layer, POSITION)
    off = ~torch.eye(len(rd.roles), dtype=torch.bool)
    print(
        f"layer {layer}: mean off-diagonal cosine raw {raw_cos[off].mean():.3f}, "
        f"specific parts {spec_cos[off].mean():.3f}"
    )
print(f"done in {time.perf_counter() - start:.0f} s")
