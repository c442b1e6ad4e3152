# %% [markdown]
# # 05 · Controls: would a direction with no role in it "work" just as well?
#
# Every sweep (`rp.sweep`, controls on) runs two control directions through the same grid
# as each role direction: a **random** direction with the role vector's norm and a
# **shuffled** one (another role's vector at the same position and layer). A role effect
# is evidence only where it stands out from the controls' spread:
#
# * boxes of Δ accuracy and Δ log p(correct letter) per source (role, random, shuffled) and
#   condition (each α, ablation), every candidate a point;
# * how often each source *passes* a selection rule: the paper's rule (chosen and judged
#   on the same questions) and held-out selection. A rule that passes random directions
#   about as often as role directions finds chance, not roles.
#
# Run:
#
# ```bash
# .venv/bin/python analyses/05_controls.py --store figures/sweep     # 02's sweep, no model
# .venv/bin/python analyses/05_controls.py                           # runs 02's default sweep
# .venv/bin/python analyses/05_controls.py --model tiny-random --quick --out /tmp/f
# ```
#
# Writes `05_controls_delta_accuracy`, `05_controls_delta_logprob` (`.html`/`.png`) and
# the tables `05_pass_rates.csv` (per rule and source: share of picks passing, picks,
# mean Δ accuracy and Δ log p of the picks), `05_pass_rates_by_alpha.csv`,
# `05_selection_paper.csv`, `05_selection_heldout.csv`, `sweep_status.json`.

# %%
import time

import _common
import pandas as pd

import roleprobe as rp
from roleprobe.results import plotting

cli = _common.parser("Role directions vs random and shuffled controls.")
_common.add_sweep_args(cli)
args = _common.parse(cli)
write = _common.figure_writer(args)
start = time.perf_counter()

result, _ = _common.sweep_result(args, lambda: _common.load_model(args))
if not result.config.controls:
    raise SystemExit("this sweep ran without controls (--no-controls): nothing to compare")
scores = result.scores()

# %% [markdown]
# ## Effects of role directions vs controls

# %%
for value in ("delta_accuracy", "delta_logprob"):
    write(plotting.control_distribution(scores, value), f"05_controls_{value}")
summary = scores.groupby(["source", "condition"])[["delta_accuracy", "delta_logprob"]]
print(summary.agg(["mean", "std"]).round(4).to_string())

# %% [markdown]
# ## How often does each source pass the selection rule?

# %%
rates, by_alpha = [], []
for rule in ("paper", "held-out"):
    picks = rp.select(result, rule=rule, seed=args.seed, **_common.select_kwargs(args))
    _common.write_table(picks, args.out, f"05_selection_{rule.replace('-', '')}")
    grouped = picks.groupby("source", sort=False)
    rates.append(
        pd.DataFrame(
            {
                "rule": rule,
                "pass_rate": grouped["passed"].mean(),
                "picks": grouped["passed"].size(),
                "mean_delta_accuracy": grouped["delta_accuracy"].mean(),
                "mean_delta_logprob": grouped["delta_logprob"].mean(),
            }
        ).reset_index()
    )
    alpha_rates = picks.groupby(["source", "alpha"], sort=False)["passed"].agg(["mean", "size"])
    by_alpha.append(
        alpha_rates.rename(columns={"mean": "pass_rate", "size": "picks"})
        .reset_index()
        .assign(rule=rule)
    )
pass_rates = pd.concat(rates, ignore_index=True)
_common.write_table(pass_rates, args.out, "05_pass_rates")
_common.write_table(pd.concat(by_alpha, ignore_index=True), args.out, "05_pass_rates_by_alpha")
print(pass_rates.round(3).to_string(index=False))

print(f"05_controls done in {time.perf_counter() - start:.0f}s -> {args.out}")
