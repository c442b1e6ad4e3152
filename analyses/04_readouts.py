# %% [markdown]
# # 04 · Readouts: what does a role direction "mean" to the model?
#
# Two readouts of a direction `d` (one role, one post-instruction position, one layer):
#
# * **logit lens** (`rp.logit_lens`): `d` and `-d` through the final norm and the
#   unembedding; the tokens each promotes, per layer. Early layers rarely read as words;
#   a direction that reads as its role's vocabulary in late layers is what the model will
#   say more of when steered.
# * **patchscope** (`rp.patchscope`, as in the paper): the model answers "What does ⧫
#   represent?" greedily with `α·d` added at the placeholder's tokens at one layer, and once
#   without. The built-in bag-of-words judge (`rp.BagOfWordsJudge`, TF-IDF against each
#   role's prompts, offline) scores whether the steered answer is about the role: its
#   similarity and the role's rank among all roles (1 = closest).
#
# Run:
#
# ```bash
# .venv/bin/python analyses/04_readouts.py                           # 3 roles, 3 layers
# .venv/bin/python analyses/04_readouts.py --roles "lawyer,chemist" --layers 10,15,20
# .venv/bin/python analyses/04_readouts.py --directions figures/directions   # from 01
# .venv/bin/python analyses/04_readouts.py --model tiny-random --quick --out /tmp/f
# ```
#
# Writes `04_logit_lens_{role}` (`.html`/`.png`: one table per role, every layer) and the
# tables `04_logit_lens.csv`, `04_patchscope.csv` and `04_patchscope.md` (steered and
# unsteered texts with the judge's score).

# %%
import time

import _common
import pandas as pd

import roleprobe as rp
from roleprobe.results import plotting

DEFAULT_ROLES = ("lawyer", "nurse", "mathematician")

cli = _common.parser("Logit lens and patchscope readouts of role directions.")
cli.add_argument("--directions", default=None, help="RoleDirections folder (from 01)")
cli.add_argument("--layers", default=None, help="patchscope layers (default: 1/4, 1/2, 3/4)")
cli.add_argument("--alpha", type=float, default=3.0, help="patchscope strength (paper: 3)")
cli.add_argument("--position", type=int, default=-1, help="position label of the directions")
cli.add_argument("--top-k", type=int, default=10, help="logit-lens tokens per layer and sign")
cli.add_argument("--max-new-tokens", type=int, default=48)
args = _common.parse(cli)
write = _common.figure_writer(args)
start = time.perf_counter()
model = _common.load_model(args)
roles = _common.roles(args, DEFAULT_ROLES[:2] if args.quick else DEFAULT_ROLES)
rd = _common.directions(args, model, roles)
n_layers = int(model.cfg.n_layers)
if args.layers:
    layers = [int(x) for x in _common.split_list(args.layers)]
else:
    layers = sorted({n_layers // 4, n_layers // 2, 3 * n_layers // 4} - {0})
if args.quick:
    layers = layers[:2]
k = min(args.top_k, 5) if args.quick else args.top_k
max_new = min(args.max_new_tokens, 8) if args.quick else args.max_new_tokens
print(f"roles {roles}, patchscope layers {layers}, alpha {args.alpha}")

# %% [markdown]
# ## Logit lens, every layer

# %%
lens = []
for role in roles:
    table = rp.logit_lens(model, rd, role, pos=args.position, k=k)
    lens.append(table.assign(role=role))
    fig = plotting.logit_lens_table(table)
    fig.update_layout(  # tall enough that a static image shows every layer
        title={"text": f"Logit lens of the {role} direction (position {args.position})"},
        height=200 + 8 * k * table["layer"].nunique(),
        width=1400,
    )
    write(fig, f"04_logit_lens_{_common.slug(role)}")
    print(f"{role}:", table[table["sign"] == "+"].groupby("layer")["token"].apply(list).tail(3))
lens_table = pd.concat(lens, ignore_index=True)
_common.write_table(lens_table, args.out, "04_logit_lens")

# %% [markdown]
# ## Patchscope, judged by the bag-of-words judge

# %%
judge = rp.BagOfWordsJudge(rp.load_prompts("builtin"))
rows = []
for role in roles:
    for layer in layers:
        vector = rd.vector(role, layer, args.position)
        result = rp.patchscope(model, vector, layer, alpha=args.alpha, max_new_tokens=max_new)
        known = role in judge.vectors
        # a text sharing no word with any role's prompts ties everywhere at 0: no rank
        overlap = known and max(judge.similarities(result.steered).values()) > 0
        rows.append(
            {
                "role": role,
                "layer": layer,
                "alpha": args.alpha,
                "judge_similarity": judge(result.steered, role) if known else float("nan"),
                "judge_rank": judge.rank(result.steered, role) if overlap else None,
                "unsteered_similarity": judge(result.unsteered, role) if known else float("nan"),
                "prompt": result.prompt,
                "steered": result.steered,
                "unsteered": result.unsteered,
            }
        )
patch = pd.DataFrame(rows)
_common.write_table(patch, args.out, "04_patchscope")

lines = [
    f"# Patchscope readouts ({args.model}, α = {args.alpha}, position {args.position})",
    "",
    f"Prompt: {patch['prompt'].iloc[0]!r}",
    f"Judge: bag-of-words similarity to the role's prompts; rank among {len(judge.vectors)}"
    " roles (1 = closest).",
    "",
    f"Unsteered answer: {patch['unsteered'].iloc[0]!r}",
    "",
    "| role | layer | similarity | rank | steered answer |",
    "| --- | --- | --- | --- | --- |",
]
for row in patch.itertuples():
    text = row.steered.replace("|", "\\|").replace("\n", " ")
    rank = "n/a (no word in common)" if pd.isna(row.judge_rank) else int(row.judge_rank)
    lines.append(f"| {row.role} | {row.layer} | {row.judge_similarity:.3f} | {rank} | {text} |")
path = args.out / "04_patchscope.md"
path.write_text("\n".join(lines) + "\n")
print("\n".join(lines))

print(f"04_readouts done in {time.perf_counter() - start:.0f}s -> {args.out}")
