# %% [markdown]
# # 01 · Role geometry: are the role directions real, and how do they relate?
#
# A role direction is the mean residual stream over prompts a person in that role would
# write minus the mean over generic prompts, read at the post-instruction template tokens
# of every layer (`rp.compute_directions`, arXiv 2502.12055). Before steering with them we
# check that they are more than noise:
#
# * **norms and cosine to the baseline mean** per role and layer (`direction_heatmaps`;
#   norms relative to the baseline mean's norm at the same layer);
# * **split-half stability**: the cosine between directions computed from two disjoint
#   halves of every prompt set (near 1: well determined by the prompts);
# * **held-out separation**: directions from 75 % of the prompts; the AUROC of the held-out
#   25 % of role prompts vs held-out generic prompts, projected on them (0.5 = chance;
#   drawn on a fixed 0.5–1 scale);
# * **role × role cosines** at a middle layer, raw and mean-centred (centring removes the
#   component every role shares, leaving what tells roles apart), and a layer slider.
#
# The directions from all prompts are saved (`directions/`, safetensors + JSON) for the
# later analyses: `--directions OUT/directions` (`rp.RoleDirections.load`).
#
# Run (all 29 built-in roles take a few minutes on the embedded SmolLM2 on CPU):
#
# ```bash
# .venv/bin/python analyses/01_role_geometry.py                     # -> figures/
# .venv/bin/python analyses/01_role_geometry.py --roles "lawyer,nurse,economist"
# .venv/bin/python analyses/01_role_geometry.py --model tiny-random --quick --out /tmp/f
# ```
#
# or open it as a notebook: `jupytext --to notebook analyses/01_role_geometry.py`.
#
# Writes `01_direction_heatmaps`, `01_stability`, `01_separation_auroc`,
# `01_cosine_layer{L}` (raw), `01_cosine_layer{L}_centred`, `01_cosine_slider`,
# `01_cosine_slider_centred` (`.html`, and `.png` when an exporter works), the tables
# `01_directions.csv` (norms, base cosines), `01_validation.csv` (stability and AUROC per
# role, position, layer), `01_cosine_layer{L}.csv`, and the folder `directions/`.

# %%
import time

import _common
import pandas as pd

import roleprobe as rp
from roleprobe.results import plotting

QUICK_ROLES = ("lawyer", "nurse", "mathematician", "economist")
POSITION = -1

args = _common.parse(_common.parser("Role geometry: directions, stability, separation."))
write = _common.figure_writer(args)
start = time.perf_counter()
model = _common.load_model(args)
prompts = rp.load_prompts("builtin", _common.roles(args, QUICK_ROLES if args.quick else None))
print(f"{len(prompts.roles)} roles, {len(prompts.base.instructions)} generic prompts")

# %% [markdown]
# ## Directions from all prompts

# %%
rd = rp.compute_directions(model, source=prompts, progress=args.progress)
saved = rd.save(args.out / "directions")
print(f"directions {tuple(rd.vectors.shape)} (role, pos, layer, d_model) saved to {saved}")
_common.write_table(rd.to_dataframe(), args.out, "01_directions")
# norms relative to the baseline mean's norm at each layer: on a linear scale the growing
# residual stream makes the last layers dominate (norm_scale="linear" or "log" also work)
fig = plotting.direction_heatmaps(rd, position=POSITION, norm_scale="relative")
write(fig, "01_direction_heatmaps")

# %% [markdown]
# ## Split-half stability and held-out separation

# %%
stability = rp.split_half_stability(model, prompts, seed=args.seed, progress=args.progress)
write(plotting.stability_heatmap(stability, rd, position=POSITION), "01_stability")

train, heldout = prompts.split(0.25, seed=args.seed)
rd_train = rp.compute_directions(model, source=train, progress=args.progress)
auroc = rp.separation_auroc(model, rd_train, heldout, progress=args.progress)

order = _common.catalogue_order(rd_train.roles)
p = rd_train.position_index(POSITION)
auroc_frame = pd.DataFrame(
    auroc[:, p].numpy(), index=list(rd_train.roles), columns=list(rd_train.layers)
).reindex(order)
held_counts = pd.DataFrame(
    {layer: [len(heldout.roles[r].instructions) for r in order] for layer in rd_train.layers},
    index=order,
)
fig = plotting.auroc_heatmap(  # fixed scale: 0.5 (chance) to 1
    auroc_frame,
    f"Held-out separation at position {POSITION}: AUROC of role vs generic prompts "
    f"projected on the direction ({len(heldout.base.instructions)} generic prompts held out)",
    n=held_counts,
)
write(fig, "01_separation_auroc")

validation = pd.DataFrame(
    [
        {
            "role": role,
            "position": pos,
            "layer": layer,
            "stability": float(stability[r, i, j]),
            "auroc": float(auroc[rd_train.role_index(role), i, j]),
            "n_role_heldout": len(heldout.roles[role].instructions),
            "n_base_heldout": len(heldout.base.instructions),
        }
        for r, role in enumerate(rd.roles)
        for i, pos in enumerate(rd.positions)
        for j, layer in enumerate(rd.layers)
    ]
)
_common.write_table(validation, args.out, "01_validation")
at_position = validation[validation["position"] == POSITION]
print(at_position.groupby("layer")[["stability", "auroc"]].median().round(3).to_string())

# %% [markdown]
# ## Role × role cosine similarity

# %%
middle = rd.layers[len(rd.layers) // 2]
raw = rd.cosine_similarity(middle, POSITION)
_common.write_table(
    pd.DataFrame(raw.numpy(), index=list(rd.roles), columns=list(rd.roles)),
    args.out,
    f"01_cosine_layer{middle}",
    index=True,
)
write(plotting.cosine_map(rd, middle, POSITION), f"01_cosine_layer{middle}")
write(plotting.cosine_map_slider(rd, POSITION), "01_cosine_slider")
if len(rd.roles) >= 3:
    write(
        plotting.cosine_map(rd, middle, POSITION, centered=True), f"01_cosine_layer{middle}_centred"
    )
    write(plotting.cosine_map_slider(rd, POSITION, centered=True), "01_cosine_slider_centred")
else:
    print("fewer than 3 roles: no mean-centred cosine maps")

print(f"01_role_geometry done in {time.perf_counter() - start:.0f}s -> {args.out}")
