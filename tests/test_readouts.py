import http.server
import json
import threading

import pytest
import torch

import roleprobe as rp
from roleprobe.steering.interventions import Addition
from roleprobe.vectors.readouts import (
    PATCHSCOPE_PROMPT,
    BagOfWordsJudge,
    OpenAIJudge,
    logit_lens,
    patchscope,
    patchscopes,
    placeholder_positions,
)


@pytest.fixture(scope="module")
def directions(tiny_model):
    return rp.compute_directions(tiny_model, roles=["lawyer", "nurse"], progress=False)


def test_logit_lens_matches_a_manual_readout(tiny_model, tiny_reference, directions):
    table = logit_lens(tiny_model, directions, "lawyer", k=4)
    assert set(table["layer"]) == {1, 2, 3}  # layer 0: a zero direction at template positions
    assert len(table) == 3 * 2 * 4 and set(table["sign"]) == {"+", "-"}
    hf_model, _ = tiny_reference
    d = directions.vector("lawyer", 1)
    with torch.no_grad():
        manual = hf_model.lm_head(hf_model.model.norm(d[None]))[0]
    expected = manual.topk(4).indices.tolist()
    assert table.query("sign == '+' and layer == 1")["token_id"].tolist() == expected
    negative = hf_model.lm_head(hf_model.model.norm(-d[None]))[0].topk(4).indices.tolist()
    assert table.query("sign == '-' and layer == 1")["token_id"].tolist() == negative
    raw = logit_lens(tiny_model, torch.stack([d, 2 * d]), layers=[1, 5], k=4)
    assert (
        raw.query("layer == 1")["token_id"].tolist() == raw.query("layer == 5")["token_id"].tolist()
    )
    with pytest.raises(ValueError, match="needs role="):
        logit_lens(tiny_model, directions)


def test_placeholder_positions_cover_the_placeholder(tiny_model):
    tok = tiny_model.tokenizer
    offsets = placeholder_positions(tok, "What does ⧫ represent?")
    ids = rp.chat_ids(tok, "What does ⧫ represent?")
    assert tok.decode([ids[o] for o in offsets]) == "⧫"
    with pytest.raises(ValueError, match="exactly once"):
        placeholder_positions(tok, "no placeholder here")


def test_patchscope(tiny_model, directions):
    d = directions.vector("lawyer", 1) * 20
    still = patchscope(tiny_model, d, layer=1, alpha=0.0, max_new_tokens=6)
    assert still.steered == still.unsteered
    moved = patchscope(tiny_model, d, layer=1, alpha=3.0, max_new_tokens=6)
    assert moved.unsteered == still.unsteered and moved.steered != moved.unsteered
    everywhere = patchscope(tiny_model, d, layer=1, positions="all", max_new_tokens=6)
    assert everywhere.positions == ()
    with pytest.raises(ValueError, match="placeholder"):
        patchscope(tiny_model, d, layer=1, positions="middle")


def _authors_patchscope(hf_model, tokenizer, vector, layer, alpha, max_new_tokens):
    """The authors' readout, independently: a forward pre-hook on the decoder layer adds
    ``alpha * vector`` to its whole input at every call (prompt and each generated token);
    greedy ``transformers`` generation. Records the sequence length each call changed."""
    from roleprobe.model.chat import chat_ids

    touched = []

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        touched.append(hidden.shape[1])
        steered = hidden + alpha * vector.to(hidden)
        if args:
            return (steered, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": steered}

    handle = hf_model.model.layers[layer].register_forward_pre_hook(hook, with_kwargs=True)
    ids = torch.tensor([chat_ids(tokenizer, rp.vectors.readouts.PATCHSCOPE_PROMPT)])
    try:
        with torch.no_grad():
            out = hf_model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.eos_token_id,
            )
    finally:
        handle.remove()
    text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
    return text, touched, ids.shape[1]


def test_patchscope_paper_mode_adds_at_every_position(tiny_model, tiny_reference, directions):
    d = directions.vector("lawyer", 1) * 20
    paper = patchscope(tiny_model, d, layer=1, alpha=3.0, mode="paper", max_new_tokens=8)
    ours = patchscope(tiny_model, d, layer=1, alpha=3.0, max_new_tokens=8)
    assert paper.mode == "paper" and paper.positions == ()
    assert ours.mode == "placeholder" and len(ours.positions) >= 1
    assert paper.unsteered == ours.unsteered and paper.steered != ours.steered
    hf_model, tokenizer = tiny_reference
    text, touched, n_prompt = _authors_patchscope(hf_model, tokenizer, d, 1, 3.0, 8)
    assert touched[0] == n_prompt and all(n == 1 for n in touched[1:])  # prompt, then each token
    assert paper.steered == text  # the authors' hook, bit for bit in greedy text


def test_patchscope_mode_defaults_and_errors(tiny_model, directions, monkeypatch):
    from roleprobe.model.chat import chat_ids
    from roleprobe.vectors import readouts

    calls = []

    def spy(model, prompts, interventions=(), max_new_tokens=64, **kw):
        calls.append((tuple(interventions), max_new_tokens))
        return ["text"]

    monkeypatch.setattr(readouts, "generate", spy)
    d = directions.vector("lawyer", 1)
    patchscope(tiny_model, d, layer=1, mode="paper")
    patchscope(tiny_model, d, layer=1)
    (_, paper_tokens), (paper_specs, _), (_, ours_tokens), (ours_specs, _) = calls
    room = tiny_model.cfg.n_ctx - len(chat_ids(tiny_model.tokenizer, readouts.PATCHSCOPE_PROMPT))
    assert paper_tokens == min(512, room) and ours_tokens == 48  # 512 unless n_ctx is short
    patchscope(tiny_model, d, layer=1, mode="paper", max_new_tokens=7)
    assert calls[-1][1] == 7
    assert paper_specs[0].positions == "all" and paper_specs[0].alpha == 3.0
    assert isinstance(ours_specs[0].positions, tuple)
    with pytest.raises(ValueError, match=r"unknown patchscope mode 'authors'.*'paper'"):
        patchscope(tiny_model, d, layer=1, mode="authors")


def _readouts(directions):
    """Four (direction, layer) pairs over three layers that each give their own text."""
    g = torch.Generator().manual_seed(3)
    return [
        (directions.vector("lawyer", 1) * 20, 1),
        (directions.vector("nurse", 1) * 20, 1),
        (torch.randn(64, generator=g) * 10, 2),
        (torch.randn(64, generator=g) * 40, 3),
    ]


def _with_addition(model, direction, layer, mode, max_new_tokens):
    """The steered answer as patchscope gave it before batching: one Addition, batch of 1."""
    where = "all" if mode == "paper" else placeholder_positions(model.tokenizer, PATCHSCOPE_PROMPT)
    spec = Addition(direction, layer, 3.0, positions=where)
    (text,) = rp.generate(model, [PATCHSCOPE_PROMPT], [spec], max_new_tokens=max_new_tokens)
    return text


@pytest.mark.parametrize("mode", ["placeholder", "paper"])
def test_patchscopes_equal_one_readout_per_direction(tiny_model, directions, mode):
    pairs = _readouts(directions)
    results = patchscopes(tiny_model, pairs, mode=mode, max_new_tokens=8, batch_size=3)
    assert [r.layer for r in results] == [1, 1, 2, 3] and {r.mode for r in results} == {mode}
    (unsteered,) = rp.generate(tiny_model, [PATCHSCOPE_PROMPT], max_new_tokens=8)
    for (d, layer), result in zip(pairs, results, strict=True):
        assert result == patchscope(tiny_model, d, layer, mode=mode, max_new_tokens=8)
        assert result.steered == _with_addition(tiny_model, d, layer, mode, 8)
        assert result.unsteered == unsteered
    assert len({r.steered for r in results}) == len(pairs)  # every row read its own direction
    if mode == "paper":  # one row stops at once, the others run on in the same batch
        assert "" in {r.steered for r in results}


def test_patchscopes_generate_the_unsteered_answer_once(tiny_model, directions, monkeypatch):
    from roleprobe.vectors import readouts

    calls = []
    real = readouts.generate

    def counting(model, prompts, interventions=(), **kwargs):
        calls.append((list(prompts), list(interventions), kwargs.get("batch_size", 8)))
        return real(model, prompts, interventions, **kwargs)

    monkeypatch.setattr(readouts, "generate", counting)
    pairs = _readouts(directions) + _readouts(directions)[:1]
    results = patchscopes(tiny_model, pairs, max_new_tokens=3, batch_size=2)
    assert len(results) == 5 and len({r.unsteered for r in results}) == 1
    unsteered = [call for call in calls if not call[1]]
    assert len(unsteered) == 1 and calls[0] is unsteered[0]  # once, first
    steered = calls[1:]
    assert [len(prompts) for prompts, _, _ in steered] == [2, 2, 1]  # one generate per batch
    assert all(set(prompts) == {PATCHSCOPE_PROMPT} for prompts, _, _ in steered)
    assert all(size == len(prompts) for prompts, _, size in steered)  # one decode each
    assert [spec.layers for _, (spec,), _ in steered] == [(1, 1), (2, 3), (1,)]
    calls.clear()
    assert patchscopes(tiny_model, [], max_new_tokens=3) == [] and not calls


def test_patchscopes_check_every_direction_before_generating(tiny_model, directions, monkeypatch):
    from roleprobe.vectors import readouts

    monkeypatch.setattr(readouts, "generate", lambda *a, **k: pytest.fail("generated"))
    d = directions.vector("lawyer", 1)
    with pytest.raises(ValueError, match="d_model=64"):
        patchscopes(tiny_model, [(d, 1), (torch.ones(3), 2)])
    with pytest.raises(ValueError, match="out of range"):
        patchscopes(tiny_model, [(d, 1), (d, 7)])
    with pytest.raises(ValueError, match="batch_size"):
        patchscopes(tiny_model, [(d, 1)], batch_size=0)


def test_bag_of_words_judge():
    judge = BagOfWordsJudge(rp.builtin_prompts())
    legal = "The court ruled the contract void, and counsel filed an appeal citing the statute."
    clinical = (
        "Check the patient's blood pressure and give the medication dose before the ward round."
    )
    assert judge.rank(legal, "lawyer") <= 3 and judge.rank(clinical, "nurse") <= 3
    n = len(judge.similarities(legal))
    assert judge.rank("zzz qqq", "lawyer") == (n + 1) / 2  # no overlap: a tie, mid-rank
    assert judge(legal, "lawyer") > judge(legal, "nurse")
    with pytest.raises(ValueError, match="not among"):
        judge("text", "pirate")


@pytest.fixture()
def fake_endpoint():
    answers = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            answers.append((self.path, self.headers["Authorization"], body))
            reply = {"choices": [{"message": {"content": Handler.answer}}]}
            payload = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Handler, f"http://127.0.0.1:{server.server_address[1]}/v1", answers
    server.shutdown()


def test_openai_compatible_judge_against_a_local_endpoint(fake_endpoint):
    handler, url, seen = fake_endpoint
    judge = OpenAIJudge(model="judge-1", base_url=url, api_key="sk-test")
    handler.answer = "Yes."
    assert judge("Objection, your honour.", "lawyer") == 1.0
    path, auth, body = seen[-1]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test"
    assert body["model"] == "judge-1" and "lawyer" in body["messages"][0]["content"]
    handler.answer = "no"
    assert judge("A recipe for soup.", "lawyer") == 0.0
    handler.answer = "perhaps"
    with pytest.raises(RuntimeError, match="neither yes nor no"):
        judge("text", "lawyer")
    with pytest.raises(ValueError, match="API key"):
        OpenAIJudge(base_url=url, api_key="")("text", "lawyer")


def test_unreachable_judge_is_a_clear_error():
    judge = OpenAIJudge(base_url="http://127.0.0.1:9/v1", api_key="k", timeout=2.0)
    with pytest.raises(RuntimeError, match=r"judge request to http://127\.0\.0\.1:9/v1 failed"):
        judge("text", "lawyer")
