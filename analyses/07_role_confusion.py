# %% [markdown]
# # 07 · Role vs role: which roles can the model's directions tell apart?
#
# Analysis 01 shows that each role direction separates held-out role prompts from generic
# ones. Every role direction also shares a large "any role" component, so that alone does
# not say the directions tell *roles* apart. Here, with directions from 75 % of the prompts
# (`rp.compute_directions`) and the held-out 25 % (`rp.role_confusion`):
#
# * **one-vs-rest AUROC** per role and layer: the role's held-out prompts vs every other
#   role's, projected on the role's direction (0.5: it does not single the role out);
# * **nearest-direction confusion**: each held-out prompt goes to the role whose direction
#   is most aligned with it, raw (`cos(x - μ_base, d_r)`) or mean-centred
#   (`cos(x - μ̄, d_r - d̄)`, the shared component removed); accuracy per layer and the
#   confusion matrix, grouped by domain, at the best layer.
#
# Run:
#
# ```bash
# .venv/bin/python analyses/07_role_confusion.py                    # all built-in roles
# .venv/bin/python analyses/07_role_confusion.py --roles "lawyer,nurse,economist,chemist"
# .venv/bin/python analyses/07_role_confusion.py --model tiny-random --quick --out /tmp/f
# ```
#
# Writes `07_confusion_{rule}` (matrix at the best layer), `07_accuracy` (accuracy per
# layer, both rules, with chance), `07_one_vs_rest_auroc` (role × layer) and the tables
# `07_accuracy.csv`, `07_one_vs_rest_auroc.csv`, `07_confusion_{rule}.csv`,
# `07_most_confused.csv`.

# %%
import time

import _common
import pandas as pd
import plotly.graph_objects as go

import roleprobe as rp
from roleprobe.results import plotting
from roleprobe.vectors.confusion import RULES, role_confusion

QUICK_ROLES = ("lawyer", "nurse", "mathematician", "economist")
POSITION = -1

cli = _common.parser("Held-out role-vs-role AUROC and nearest-direction confusion.")
cli.add_argument("--source", default="builtin", help="prompts: builtin, paper or a folder")
cli.add_argument("--holdout", type=float, default=0.25, help="held-out fraction per role")
cli.add_argument("--per-role", type=int, default=None, help="keep at most N prompts per role")
cli.add_argument("--batch-size", type=int, default=16)
cli.add_argument("--layers", default=None, help="comma-separated layers (default: all)")
args = _common.parse(cli)
write = _common.figure_writer(args)
start = time.perf_counter()
model = _common.load_model(args)
names = _common.roles(args, QUICK_ROLES if args.quick else None)
source = args.data / "role-vectors-paper" if args.source == "paper" else args.source
prompts = rp.load_prompts(source, names)
cap = args.per_role or (8 if args.quick else None)
if cap:
    prompts = rp.RolePrompts(
        {r: p.sample(min(cap, len(p)), args.seed) for r, p in prompts.roles.items()},
        prompts.base.sample(min(4 * cap, len(prompts.base)), args.seed),
        prompts.source,
    )
train, held = prompts.split(args.holdout, seed=args.seed)
print(f"{len(prompts.roles)} roles; held out per role: {len(next(iter(held.roles.values())))}")

# %%
rd = rp.compute_directions(
    model,
    source=train,
    positions=[POSITION],
    layers=[int(x) for x in _common.split_list(args.layers) or []] or None,
    batch_size=args.batch_size,
    progress=args.progress,
)
rc = role_confusion(model, rd, held, batch_size=args.batch_size, progress=args.progress)
summary = rc.to_dataframe()
_common.write_table(summary, args.out, "07_accuracy")
aurocs = rc.auroc_frame()
_common.write_table(aurocs, args.out, "07_one_vs_rest_auroc")

# %% [markdown]
# ## Accuracy of nearest-direction assignment per layer

# %%
fig = go.Figure()
for rule in RULES:
    part = summary[summary["rule"] == rule]
    fig.add_scatter(x=part["layer"], y=part["accuracy"], mode="lines+markers", name=rule)
fig.add_hline(y=1 / len(rd.roles), line_dash="dot", annotation_text="chance")
fig.update_layout(
    title={
        "text": f"Held-out nearest-direction accuracy ({len(rd.roles)} roles, position {POSITION})"
    },
    xaxis_title="layer",
    yaxis_title="fraction assigned to their own role",
    template="plotly_white",
)
write(fig, "07_accuracy")
ovr = aurocs.pivot(index="role", columns="layer", values="auroc").reindex(
    _common.catalogue_order(rd.roles)
)
title = "Held-out one-vs-rest AUROC: each role's prompts vs the other roles' prompts"
write(plotting.auroc_heatmap(ovr, title), "07_one_vs_rest_auroc")

# %% [markdown]
# ## Confusion at the best layer

# %%
known = {x.name: x.domain for x in rp.ROLES}
domains = [known.get(r, "other") for r in rd.roles]
rows = []
for rule in RULES:
    part = summary[summary["rule"] == rule].dropna(subset=["accuracy"])
    best = part.loc[part["accuracy"].idxmax()]
    layer = int(best["layer"])
    matrix = rc.matrix(layer, POSITION, rule)
    title = (
        f"Held-out role confusion, {rule} rule, layer {layer} "
        f"(accuracy {best['accuracy']:.2f}, chance {best['chance']:.2f})"
    )
    write(plotting.confusion_figure(matrix, rd.roles, domains, title), f"07_confusion_{rule}")
    table = pd.DataFrame(matrix.numpy(), index=list(rd.roles), columns=list(rd.roles))
    _common.write_table(table, args.out, f"07_confusion_{rule}", index=True)
    confused = rc.most_confused(layer, POSITION, rule, k=10).assign(rule=rule, layer=layer)
    rows.append(confused)
    print(
        f"{rule}: best layer {layer}, accuracy {best['accuracy']:.3f} (chance {best['chance']:.3f})"
    )
    print(confused.to_string(index=False))
_common.write_table(pd.concat(rows, ignore_index=True), args.out, "07_most_confused")
best_auroc = aurocs.groupby("layer")["auroc"].mean()
print(f"mean one-vs-rest AUROC: best layer {best_auroc.idxmax()} ({best_auroc.max():.3f})")
print(f"done in {time.perf_counter() - start:.0f} s")
