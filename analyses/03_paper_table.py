# %% [markdown]
# # 03 · The paper's main table for one model
#
# The paper's procedure (arXiv 2502.12055): sweep each role on its own domain, pick one
# (position, layer) per role and α with the paper's rule (chosen and judged on the same
# questions), then apply each pick to the questions of *all* domains and report, per role,
# condition (addition with each α, ablation) and domain, the change against the unsteered
# model — accuracy, the paper's relative change in %, McNemar's exact test (stars after a
# Holm correction over the whole table) and the change in log p(correct letter).
#
# Run:
#
# ```bash
# .venv/bin/python analyses/03_paper_table.py                       # built-in bank, 3 roles
# .venv/bin/python analyses/03_paper_table.py --store figures/sweep # reuse 02's sweep
# .venv/bin/python analyses/03_paper_table.py --store runs/x/04_sweep/store  # a run's sweep
# .venv/bin/python analyses/03_paper_table.py --round-accuracies 2  # the paper's rounding
# .venv/bin/python analyses/03_paper_table.py --benchmark paper --data ../shared/data
# .venv/bin/python analyses/03_paper_table.py --compare qwen=runs/qwen/03_effects.csv
# .venv/bin/python analyses/03_paper_table.py --model tiny-random --quick --out /tmp/f
# ```
#
# With `--store`, the directions are the run's own (`<run>/02_directions`, when the store
# sits in a run folder), `--directions`, or recomputed on the built-in prompts; the script
# stops unless they hash to what the sweep ran. The baseline is scored with the sweep's tie
# rule and system turn, so that steered and unsteered questions are asked the same way.
#
# `--compare NAME=CSV ...` (or just `CSV`, named after its folder) adds the effect tables
# of other models (this script's `03_effects.csv` from another run) and draws their
# agreement (Pearson r over the cells both have).
#
# Writes `03_paper_table` (% change), `03_paper_table_logprob` (Δ log p),
# `03_model_correlation` with `--compare` (`.html`/`.png`) and the tables
# `03_selection_paper.csv`, `03_effects.csv`, `03_pivot_relative_change.csv`,
# `03_pivot_delta_logprob.csv`, `03_pivot_stars.csv`, `03_base_items.csv`,
# `03_runs_items.csv` (per question), `03_model_correlation.csv` with `--compare`,
# `sweep_status.json`.

# %%
import time
from pathlib import Path

import _common
import pandas as pd

import roleprobe as rp
from roleprobe.results import plotting

cli = _common.parser("The paper's main table: sweep, paper rule, all-domain effects.")
_common.add_sweep_args(cli)
cli.add_argument(
    "--compare", nargs="*", default=[], help="effect tables of other models: NAME=CSV or CSV"
)
cli.add_argument("--label", default=None, help="this model's name in --compare (default --model)")
cli.add_argument(
    "--round-accuracies",
    type=int,
    default=None,
    metavar="N",
    help="relative change from accuracies rounded to N decimals (2: as the paper's notebook)",
)
args = _common.parse(cli)
write = _common.figure_writer(args)
start = time.perf_counter()
model = _common.load_model(args)

# %% [markdown]
# ## Sweep and the paper's pick per role and α

# %%
result, rd = _common.sweep_result(args, lambda: model)
if rd is None:
    rd = _common.store_directions(args, model, result)
picks = rp.select(result, rule="paper", seed=args.seed, **_common.select_kwargs(args))
_common.write_table(picks, args.out, "03_selection_paper")
chosen = picks[picks["source"] == "role"]
print(chosen[["role", "alpha", "position", "layer", "passed", "reason"]].to_string(index=False))

# %% [markdown]
# ## Each pick on every domain, against the unsteered model

# %%
# the baseline is asked as the sweep asked its questions: the directions' system turn, the
# sweep's tie rule (effect_table refuses a baseline in another format)
swept = result.config
bench = _common.load_benchmark(args)
base = rp.evaluate(
    model, bench, progress=args.progress, tie_rule=swept.tie_rule, system=swept.system
)
runs = rp.apply_picks(
    model,
    rd,
    bench,
    picks,
    scope=swept.scope,
    seed=swept.seed,
    ablation=swept.ablation,
    ablation_at=swept.ablation_at,
    tie_rule=swept.tie_rule,
    system=swept.system,
    baseline=base,
    progress=args.progress,
)
_common.write_table(base, args.out, "03_base_items")
_common.write_table(runs, args.out, "03_runs_items")
resamples = {"n_boot": 200, "n_perm": 500} if args.quick else {}
effects = rp.effect_table(
    base, runs, seed=args.seed, round_accuracies=args.round_accuracies, **resamples
)
_common.write_table(effects, args.out, "03_effects")
for value, name in (
    ("relative_change_pct", "relative_change"),
    ("delta_logprob", "delta_logprob"),
    ("stars", "stars"),
):
    _common.write_table(rp.pivot_effects(effects, value), args.out, f"03_pivot_{name}", index=True)
print(rp.pivot_effects(effects, "relative_change_pct").round(1).to_string())

write(plotting.paper_table_figure(effects), "03_paper_table")
write(plotting.paper_table_figure(effects, "delta_logprob"), "03_paper_table_logprob")

# %% [markdown]
# ## Agreement with other models (`--compare`)

# %%
if args.compare:
    tables = {args.label or args.model: effects}
    for spec in args.compare:
        name, _, path = spec.rpartition("=")
        path = Path(path)
        tables[name or path.parent.name or path.stem] = pd.read_csv(path)
    corr = rp.model_correlation(tables)
    _common.write_table(corr, args.out, "03_model_correlation")
    write(plotting.correlation_heatmap(corr), "03_model_correlation")
    print(corr.to_string(index=False))

print(f"03_paper_table done in {time.perf_counter() - start:.0f}s -> {args.out}")
