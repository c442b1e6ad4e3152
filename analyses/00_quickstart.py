# ruff: noqa: B018  (cells end in expressions, which a notebook displays)
# the README's comments are aligned by hand:
# fmt: off

# %% [markdown]
# # 00 · Quickstart: the README's code, executed
#
# Every ```` ```python ```` block of `README.md` is one `# %% [readme: NAME]` cell of this
# file, in the same order. Edit the cells here, then copy them into the README with
#
# ```bash
# .venv/bin/python analyses/_readme_blocks.py          # rewrites README.md's python blocks
# .venv/bin/python analyses/_readme_blocks.py --check  # exit 1 if they differ
# ```
#
# `tests/test_readme.py` checks that the README's blocks equal these cells and executes them
# in order in one namespace, as a notebook would: on the embedded SmolLM2-135M-Instruct
# (slow tier) and on the four-layer `tiny-random` model (default tier).
#
# The calls are small on purpose (three roles, one benchmark domain, one layer in the sweep)
# so the whole notebook runs in a couple of minutes on a laptop CPU; comments give the
# full-size calls. Run it from the repository root (it reads the paper's data from
# `../shared/data/role-vectors-paper` and writes `runs/`):
#
# ```bash
# .venv/bin/python analyses/00_quickstart.py
# jupytext --to notebook analyses/00_quickstart.py    # or open it as a notebook
# ```

# %% [readme: quickstart]
import roleprobe as rp
from roleprobe.results import plotting  # every figure builder returns a go.Figure

model = rp.load_model()                    # embedded SmolLM2-135M-Instruct, offline, float32
# model = rp.load_model("google/gemma-2-2b-it", device="cuda", dtype="bfloat16")  # hub model
# rp.set_progress(False)                   # silence every progress bar
mid = model.cfg.n_layers // 2              # a middle layer: 15 of SmolLM2's 30

batch = rp.encode_chat(model.tokenizer, ["Explain inflation.", "How do I appeal a verdict?"])
logits, cache = model.run_with_cache(batch.input_ids, attention_mask=batch.attention_mask)
resid = cache[f"blocks.{mid}.hook_resid_pre"][:, batch.post_instruction_positions]
resid.shape                                # [batch, n_post, d_model] = [2, 6, 576]

rp.ChatTemplate.from_tokenizer(model.tokenizer).post_instruction_tokens(model.tokenizer)
# ['<|im_end|>', '\n', '<|im_start|>', 'ass', 'istant', '\n']
rp.answer_letter_ids(model.tokenizer)      # ids of "A".."D" as the first assistant token
rp.generate(model, "What is the capital of France?", max_new_tokens=20)

# %% [readme: directions]
roles = ["lawyer", "nurse", "mathematician"]       # leave out for all 29
prompts = rp.load_prompts("builtin", roles)        # role prompts + generic baseline, offline
train, heldout = prompts.split(0.25, seed=0)       # deterministic; copies of a prompt stay together
rd = rp.compute_directions(model, source=train)    # difference of means, every layer, float64
rd.vectors.shape                                   # [role, pos, layer, d_model] = [3, 6, 30, 576]
rd.vector("lawyer", layer=mid, pos=-1)             # one raw (unnormalised) direction
rd.cosine_similarity(layer=mid, centered=True)     # [role, role]
rd.to_dataframe()                                  # norms, cosine to the base mean, counts
auroc = rp.separation_auroc(model, rd, heldout)    # [role, pos, layer]: held-out role vs generic
stability = rp.split_half_stability(model, train)  # [role, pos, layer]: cosine between halves
rd.frame(auroc, "auroc")                           # labelled: role, position, layer, auroc
rd.save("runs/smollm2/directions")                 # safetensors + JSON, checksummed
rp.RoleDirections.load("runs/smollm2/directions", model)   # refuses other weights or widths

plotting.direction_heatmaps(rd).show()             # norms and cosine to the base mean
plotting.cosine_map(rd, layer=mid, centered=True)  # role x role, grouped by domain
plotting.cosine_map_slider(rd)                     # the same with a layer slider

# the paper's own prompts (128 per role, sampled exactly as its code does)
rd_paper = rp.compute_directions(model, roles=["lawyer"],    # leave out for all 29
                                 source="paper", data_dir="../shared/data/role-vectors-paper",
                                 revision="v1",    # or "final" (default): see Fidelity
                                 system="none")    # the paper's format: no system turn
# your own: lists of strings, files or datasets.Dataset objects; or a folder of
# <role>.json|jsonl|csv|txt files plus base.*: rp.load_prompts("path/to/folder")
pirate = rp.custom_prompts({"pirate": ["Chart a course to Tortuga.", "Keep a crew loyal."]},
                           base=["Explain inflation.", "Write a haiku about rain."])
rp.compute_directions(model, source=pirate)

# %% [readme: interventions]
d = rd.vector("mathematician", layer=mid)          # raw direction, [d_model]
with rp.steer(model, rp.Addition(d, layer=mid, alpha=3.0)):     # the paper's addition
    steered = model(batch.input_ids, attention_mask=batch.attention_mask)
with rp.steer(model, rp.Ablation(d)):              # every resid_pre, attn_out, mlp_out
    ablated = model(batch.input_ids, attention_mask=batch.attention_mask)
rp.Ablation(d, at="paper")    # Gemma-2/3: project the sub-layer outputs before the post-norms
with rp.orthogonalized(model, d):                  # the same ablation, baked into weights
    baked = model(batch.input_ids, attention_mask=batch.attention_mask)
(baked - ablated).abs().max()                      # ~1e-4
norms = rp.residual_norms(model)                   # alpha in units of the residual norm:
rp.Addition(d, mid, alpha=0.5, reference_norm=float(norms[mid]))
rp.generate(model, ["What is the capital of France?", "Name a prime number."],
            interventions=[rp.Addition(d, mid, 3.0, positions="generated")], max_new_tokens=20)

rp.logit_lens(model, rd, "lawyer", k=10)           # DataFrame: layer, sign, rank, token, logit
result = rp.patchscope(model, rd.vector("lawyer", mid), layer=mid, alpha=3.0,
                       max_new_tokens=16)          # default 48; or mode="paper"
rp.BagOfWordsJudge(rp.load_prompts("builtin")).rank(result.steered, "lawyer")

# %% [readme: evaluation]
bench = rp.load_benchmark("builtin", domain="law") # 13 of the 104 built-in questions, offline
# the paper's 200 law questions; MMLU from a local release ("mmlu-local") or the hub ("mmlu"):
# bench = rp.load_benchmark("paper", domain="law", path="../shared/data/role-vectors-paper")
base = rp.evaluate(model, bench)                                  # per-item DataFrame
lawyer = rp.evaluate(model, bench, rp.Persona("lawyer"))          # system prompt or prefix
steered = rp.evaluate(model, bench, rp.Addition(d, layer=mid, alpha=3.0))
rp.accuracy(base)          # accuracy, 95% bootstrap CI, predicted-letter shares, majority baseline
rp.accuracy_by(base, "subject")
rp.compare(base, steered)  # paired: delta + CI, % change, exact McNemar, log-prob shift + perm. p
ps = [rp.compare(base, other)["logprob_p"] for other in (lawyer, steered)]
rp.adjust_pvalues(ps, "holm")                 # or "bh"
rp.evaluate(model, bench, tie_rule="paper")   # ties: "fractional" (default), "paper", "first"

# %% [readme: sweep]
result = rp.sweep(model, rd, bench,        # rp.load_benchmark("builtin"): every domain
                  roles=["lawyer"],                              # default: all in rd
                  layers=[mid], positions=[-1],                  # default: all in rd
                  alphas=(3.0,), ablation=True, controls=True,   # default alphas: (1.0, 3.0)
                  store="runs/sweep", resume=True, shard=None)   # or shard="3/8"
result.table               # one row per (candidate, question): role, source, donor, position,
                           # layer, condition, alpha + the per-item scores of rp.evaluate
result.scores()            # per candidate: accuracy, base_accuracy, delta_accuracy,
                           # logprob_correct, delta_logprob, predicted-letter shares
picks = rp.select(result, rule="held-out")   # or "paper", "paper-rounded", or a callable
picks.groupby("source")["passed"].mean()     # how often controls "pass" the rule
runs = rp.apply_picks(model, rd, bench, picks)   # each pick on every domain of bench
rp.effect_table(base, runs)                       # the paper's role x domain table

# %% [readme: origins]
rp.shared_share(rd)                      # per role, position, layer: cos² to the roles' mean
spec = rp.specific_directions(rd)        # each d_r minus the mean over roles: a RoleDirections
rp.Addition(spec.vector("lawyer", mid, -1), mid, 3.0)   # steers, ablates, sweeps (specific=True)
confusion = rp.role_confusion(model, rd, heldout)       # held-out role vs role
confusion.to_dataframe()                 # nearest-direction accuracy per layer (chance 1/3 here)
writers = rp.component_attribution(model, train, layer=mid, positions=[-1], directions=rd)
rp.top_writers(writers, k=3)             # which heads and MLPs write each direction
plotting.top_writers_figure(writers)
shift = rp.persona_shift(model, rd, bench, layers=[mid])  # "You are a lawyer." along d_lawyer?
shift.specificity()                      # own persona vs the others' shift, per layer
