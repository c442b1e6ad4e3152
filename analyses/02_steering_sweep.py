# %% [markdown]
# # 02 · Steering sweep: where does adding or ablating a role direction move the answers?
#
# `rp.sweep` adds each role's direction (computed at one post-instruction position and
# layer) at that layer with strength α, and ablates it at every layer, on the questions of
# the role's own domain; random directions of the same norm and other roles' directions
# (shuffled) run through the same grid as controls. Two selection rules then pick one
# (position, layer) per role and α:
#
# * `rule="paper"`: the paper's rule, chosen and reported on the *same* questions
#   (optimistic);
# * `rule="held-out"`: chosen on half of each role's questions, reported on the other half
#   with a CI, McNemar and permutation tests, corrected across picks.
#
# A 135M model is at chance on these questions: read Δ log p(correct letter) beside
# Δ accuracy, and the letter attribution (which answer letters a direction pushes, read
# through the final norm and the unembedding) beside both.
#
# Run:
#
# ```bash
# .venv/bin/python analyses/02_steering_sweep.py                  # 3 roles, every 6th layer
# .venv/bin/python analyses/02_steering_sweep.py --layer-step 3 --alphas 1,3,6 \
#     --roles "lawyer,nurse,mathematician,economist"              # a wider grid
# .venv/bin/python analyses/02_steering_sweep.py --store runs/sweep-done   # an existing store
# .venv/bin/python analyses/02_steering_sweep.py --model tiny-random --quick --out /tmp/f
# ```
#
# A sweep run here is stored in `OUT/sweep/` (resumable; 03 and 05 reuse it with
# `--store OUT/sweep`). A store that is still being written is analysed on its finished
# (role, layer) cells (see `sweep_status.json`).
#
# Writes `02_sweep_delta_accuracy`, `02_sweep_delta_logprob` (held-out picks outlined),
# `02_layers_{role}_delta_logprob`, `02_layers_{role}_delta_accuracy`,
# `02_letter_attribution` (`.html`/`.png`) and the tables `02_scores.csv` (every
# candidate), `02_selection_paper.csv`, `02_selection_heldout.csv`,
# `02_letter_attribution.csv`, `sweep_status.json`.

# %%
import time

import _common
import pandas as pd

import roleprobe as rp
from roleprobe.results import plotting

cli = _common.parser("Steering sweep, selection by the paper's rule and held-out.")
_common.add_sweep_args(cli)
args = _common.parse(cli)
write = _common.figure_writer(args)
start = time.perf_counter()
model = _common.load_model(args)
result, rd = _common.sweep_result(args, lambda: model)
scores = result.scores()
_common.write_table(scores, args.out, "02_scores")
cfg = result.config
print(
    f"sweep: {len(cfg.roles)} roles x {len(cfg.layers)} layers x {len(cfg.positions)} positions,"
    f" alphas {list(cfg.alphas)}, ablation {cfg.ablation}, controls {cfg.controls}:"
    f" {len(scores)} candidates"
)

# %% [markdown]
# ## Selection: the paper's rule vs held-out

# %%
picks = {}
for rule in ("paper", "held-out"):
    picks[rule] = rp.select(result, rule=rule, seed=args.seed, **_common.select_kwargs(args))
    _common.write_table(picks[rule], args.out, f"02_selection_{rule.replace('-', '')}")
shown = ["role", "source", "alpha", "position", "layer", "passed", "delta_accuracy"]
held_roles = picks["held-out"][picks["held-out"]["source"] == "role"]
print(held_roles[[*shown, "delta_logprob"]].to_string(index=False))

# %% [markdown]
# ## Sweep heatmaps (held-out picks outlined) and per-role layer profiles

# %%
for value in ("delta_accuracy", "delta_logprob"):
    write(plotting.sweep_heatmaps(scores, value, selected=held_roles), f"02_sweep_{value}")
for role in cfg.roles:
    for metric in ("delta_logprob", "delta_accuracy"):
        fig = plotting.layer_effect_plot(scores, role, metric=metric)
        write(fig, f"02_layers_{_common.slug(role)}_{metric}")

# %% [markdown]
# ## Letter attribution of the swept directions

# %%
if rd is None:
    rd = _common.store_directions(args, model, result)
position = cfg.positions[0]
tables, scale = [], None
for role in cfg.roles:
    table = rp.letter_attribution(
        model, rd, role, position=position, layers=list(cfg.layers), scale=scale
    )
    scale = table.attrs["scale"]
    tables.append(table)
attribution = pd.concat(tables, ignore_index=True)
_common.write_table(attribution, args.out, "02_letter_attribution")
fig = plotting.letter_attribution_plot(attribution)
write(fig.update_layout(width=300 + 300 * len(cfg.roles)), "02_letter_attribution")

print(f"02_steering_sweep done in {time.perf_counter() - start:.0f}s -> {args.out}")
