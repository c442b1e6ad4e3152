# %% [markdown]
# # 09 · Persona ↔ vector: does "You are a lawyer." move the stream along the lawyer direction?
#
# A role direction is a difference of means between role *instructions* and generic ones.
# Stating the role in the prompt (`rp.Persona`) is another way to make the model "be" the
# role. If the direction captures the role, a persona should move the question's residual
# stream along its own role's direction — and more than along the other roles' directions.
#
# `persona_shift` runs the questions once under the baseline and once per persona and, at
# every layer, projects the residual stream entering the block at the **last position** (the
# token whose logits score the answer letter; the directions are read at the same offset,
# -1) on every role's unit direction. Per persona p, direction r and layer l:
# `shift = mean_q proj(persona p) − mean_q proj(baseline)`. It also keeps, per question, the
# shift along the persona's own direction and the change of the correct letter's log-prob
# in the same forward pass, so we can ask whether questions moved further along the
# direction gain more.
#
# Read the matrix against its off-diagonal: raw role directions share a large "any role"
# component, so every persona can move every direction. The *double-centred* matrix
# (direction and persona means removed) and `top1` (the share of directions whose largest
# shift comes from their own persona; chance `1/personas`) isolate the specific part.
# `top1_p` tests `top1` exactly over every persona ↔ role assignment (Holm over the layers:
# `top1_p_adj`).
#
# The per-question correlation pools every (persona, question) pair, but all personas answer
# the same questions against one shared baseline: the pairs come in one cluster per
# question, and the t-test over all pairs (`p_naive`) treats them as independent. The
# question is the unit: `p_cluster` permutes whole questions (one relabelling for every
# persona at once), `p_cluster_adj` is Holm over the layers, and `r_ci_low`/`r_ci_high` is a
# bootstrap interval that resamples whole questions.
#
# Note: with `mode="auto"` a persona replaces SmolLM2's default system prompt, while the
# baseline keeps it, so a shift is "persona sentence vs default system sentence".
#
# Run:
#
# ```bash
# .venv/bin/python analyses/09_persona_vector.py --per-domain 2 --no-png  # figures/: 29 × 16
# .venv/bin/python analyses/09_persona_vector.py                  # 29 roles, 24 questions
# .venv/bin/python analyses/09_persona_vector.py --roles "lawyer,nurse,economist,chemist"
# .venv/bin/python analyses/09_persona_vector.py --model tiny-random --quick --out /tmp/f
# ```
#
# Writes `09_persona_shift` (persona × direction with a layer slider), `09_persona_shift_centred`
# (double-centred, at the most specific layer), `09_specificity` (own vs others per layer)
# and the tables `09_persona_shift.csv`, `09_specificity.csv`, `09_item_correlation.csv`.

# %%
import time

import _common
import pandas as pd

import roleprobe as rp
from roleprobe.experiments.evaluation import subject_domain
from roleprobe.experiments.persona_shift import persona_shift
from roleprobe.results import plotting

QUICK_ROLES = ("lawyer", "nurse", "mathematician", "economist")

cli = _common.parser("Persona-induced shifts along role directions.")
cli.add_argument("--per-domain", type=int, default=3, help="questions per domain")
cli.add_argument("--batch-size", type=int, default=16)
cli.add_argument("--layers", default=None, help="comma-separated layers (default: all)")
args = _common.parse(cli)
write = _common.figure_writer(args)
start = time.perf_counter()
model = _common.load_model(args)
names = _common.roles(args, QUICK_ROLES if args.quick else None) or [r.name for r in rp.ROLES]
bench = _common.load_benchmark(args)
items = (
    bench.items.assign(_domain=[subject_domain(s) for s in bench.items["subject"]])
    .groupby("_domain", sort=True)
    .sample(args.per_domain, random_state=args.seed)
    .drop(columns="_domain")
    .reset_index(drop=True)
)
questions = rp.MultipleChoice(items, f"{bench.name}|{args.per_domain}/domain", bench.split)
print(f"{len(names)} personas × {len(questions)} questions")

# %%
rd = rp.compute_directions(
    model,
    roles=names,
    positions=[-1],
    layers=[int(x) for x in _common.split_list(args.layers) or []] or None,
    batch_size=args.batch_size,
    progress=args.progress,
)
ps = persona_shift(
    model, rd, questions, personas=names, batch_size=args.batch_size, progress=args.progress
)
long = ps.to_dataframe()
_common.write_table(long, args.out, "09_persona_shift")
spec = ps.specificity()
_common.write_table(spec, args.out, "09_specificity")
print(spec.to_string(index=False, float_format="%.3f"))

# %% [markdown]
# ## Which layer is most specific, and do moved questions gain?

# %%
best = int(spec.loc[spec["difference"].idxmax(), "layer"])
pooled = ps.item_correlation(pooled=True)
per_persona = ps.item_correlation()
corr = pd.concat([pooled, per_persona], ignore_index=True)
_common.write_table(corr, args.out, "09_item_correlation")
at_best = spec[spec["layer"] == best].iloc[0]
r_best = pooled[pooled["layer"] == best].iloc[0]
print(
    f"most specific layer {best}: own {at_best['diagonal']:.3f} vs others "
    f"{at_best['off_diagonal']:.3f} (top-1 {at_best['top1']:.2f}, chance "
    f"{at_best['chance']:.2f}, p = {at_best['top1_p']:.2g}, Holm {at_best['top1_p_adj']:.2g}); "
    f"r(own shift, Δ log-prob) = {r_best['r']:.3f} (naive p = {r_best['p_naive']:.2g} over "
    f"{r_best['n']} pairs; over {r_best['n_clusters']} questions p = {r_best['p_cluster']:.2g}, "
    f"Holm {r_best['p_cluster_adj']:.2g})"
)
defined = pooled.dropna(subset=["p_naive"])
naive_holm = rp.adjust_pvalues(defined["p_naive"].to_numpy(), "holm")
print(
    f"layers where r survives Holm over {len(defined)} layers at 0.05: naive (pairs) "
    f"{defined.loc[naive_holm <= 0.05, 'layer'].tolist()}, over questions "
    f"{pooled.loc[pooled['p_cluster_adj'] <= 0.05, 'layer'].tolist()}; top-1 "
    f"{spec.loc[spec['top1_p_adj'] <= 0.05, 'layer'].tolist()}"
)
print(pooled.to_string(index=False, float_format="%.3g"))

# %%
write(plotting.persona_shift_figure(long), "09_persona_shift")
write(plotting.persona_shift_figure(long, layer=best, centred=True), "09_persona_shift_centred")
write(plotting.persona_specificity_figure(spec), "09_specificity")
print(f"done in {time.perf_counter() - start:.0f} s")
