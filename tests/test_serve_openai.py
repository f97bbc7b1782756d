"""The OpenAI-compatible endpoints against the official ``openai`` client: a tiny random Llama (saved to a temp
dir with a tiny tokenizer) and a causal-LM LoRA, completions and chat, streamed and not, equal to in-process
``generate``; concurrent completions share batches; errors arrive as the client's typed exceptions."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from adapterhub import AdapterModel, LoRA
from adapterhub.model import predicting
from serve_helpers import metric, randomize, serving
from test_model import llama_matched_vocab

pytestmark = pytest.mark.timeout(120)
TOKEN = "tok-0123"


@pytest.fixture
def llama(tmp_path):
    base, tok = llama_matched_vocab(seed=1)
    d = tmp_path / "tiny-llama"
    base.save_pretrained(d)
    tok.save_pretrained(d)
    model = AdapterModel.from_pretrained(str(d))
    for i, name in enumerate(["gen", "gen2"]):
        model.add_adapter(name, LoRA(r=4), task="causal-lm")
        randomize(model, name, seed=40 + i, std=0.3)
        model.bank(name)
    model.add_adapter("cls", LoRA(r=2), labels=["x", "y"], pooling="last")
    model.bank("cls")
    return model


def client(srv, token=TOKEN):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=token, max_retries=0, timeout=60)


def test_openai_client_round_trip(llama):
    prompt = "the film was"
    want = llama.generate([prompt], adapters="gen", max_new_tokens=8)[0]
    chat_prompt = "system: be brief\nuser: i love paris\nassistant:"  # no chat template: role lines
    chat_want = llama.generate([chat_prompt], adapters="gen", max_new_tokens=6)[0]
    assert want.strip() and want != llama.generate([prompt], adapters="gen2", max_new_tokens=8)[0]
    with serving(llama, token=TOKEN) as srv:
        c = client(srv)
        r = c.completions.create(model="gen", prompt=prompt, max_tokens=8, temperature=0)
        assert r.choices[0].text == want and r.choices[0].finish_reason in ("length", "stop")
        assert r.usage.prompt_tokens == 3 and 1 <= r.usage.completion_tokens <= 8 and r.model == "gen"
        chunks = list(c.completions.create(model="gen", prompt=prompt, max_tokens=8, stream=True,
                                           stream_options={"include_usage": True}))
        assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == want
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == r.choices[0].finish_reason
        assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens and len(chunks) > 3
        stop = want.split()[2]
        cut = c.completions.create(model="gen", prompt=prompt, max_tokens=8, stop=[stop])
        assert cut.choices[0].text == want[:want.index(stop)] and cut.choices[0].finish_reason == "stop"

        msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "i love paris"}]
        r = c.chat.completions.create(model="gen", messages=msgs, max_tokens=6)
        assert r.choices[0].message.content == chat_want and r.choices[0].message.role == "assistant"
        stream = c.chat.completions.create(model="gen", messages=msgs, max_completion_tokens=6, stream=True)
        assert "".join(ch.choices[0].delta.content or "" for ch in stream) == chat_want

        base = c.completions.create(model=llama.base_id, prompt=prompt, max_tokens=5)
        assert base.choices[0].text == predicting.generate_base(llama, [prompt], max_new_tokens=5)[0]
        ids = [m.id for m in c.models.list()]
        assert ids[:1] == [llama.base_id] and {"gen", "gen2", "cls"} <= set(ids)
        assert c.models.retrieve("gen").id == "gen"

        with pytest.raises(openai.NotFoundError, match="unknown adapter 'nope'"):
            c.completions.create(model="nope", prompt=prompt)
        with pytest.raises(openai.BadRequestError, match="sequence-classification adapter"):
            c.completions.create(model="cls", prompt=prompt)
        with pytest.raises(openai.BadRequestError, match="n=2 is not supported"):
            c.completions.create(model="gen", prompt=prompt, n=2)
        with pytest.raises(openai.UnprocessableEntityError, match="messages.0.role"):
            c.chat.completions.create(model="gen", messages=[{"role": "robot", "content": "hi"}])
        with pytest.raises(openai.BadRequestError, match="prompt has no tokens"):
            c.completions.create(model="gen", prompt="")
        with pytest.raises(openai.BadRequestError, match="context of 64 tokens"):
            c.completions.create(model="gen", prompt="the film " * 28, max_tokens=16)
        with pytest.raises(openai.AuthenticationError):
            client(srv, "wrong").models.list()


def test_concurrent_completions_share_batches_and_equal_alone(llama):
    jobs = [("gen" if i % 2 else "gen2", p, 3 + i % 4) for i, p in
            enumerate(["the film was", "i love paris and", "new york city is", "obama said", "the team won",
                       "a bad plot"])]
    want = [llama.generate([p], adapters=a, max_new_tokens=n)[0] for a, p, n in jobs]
    with serving(llama, max_wait_ms=100) as srv:
        c = client(srv, "none")
        start = threading.Barrier(len(jobs))

        def ask(job):
            a, p, n = job
            start.wait(10)
            return c.completions.create(model=a, prompt=p, max_tokens=n).choices[0].text

        with ThreadPoolExecutor(len(jobs)) as pool:
            got = list(pool.map(ask, jobs))
        assert got == want
        assert metric(srv, "adapterhub_batch_rows_count") < len(jobs)
        assert metric(srv, "adapterhub_requests_total", endpoint="/v1/completions", adapter="gen",
                      status="200") == 3
