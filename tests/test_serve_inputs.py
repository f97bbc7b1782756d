"""Every bad input to ``adapterhub serve`` gets a 4xx JSON answer naming the field or adapter (never a 500);
``adapterhub serve`` itself as a process (SIGTERM drains and exits 0); the streaming text rules."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapterhub import LoRA
from adapterhub.serving.textstream import RowText, first_stop, holdback
from serve_helpers import TEXTS, bert_model, bert_store, call, serving

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[1]
P, C, CHAT = "/v1/predict", "/v1/completions", "/v1/chat/completions"
OK = {"adapter": "sent", "inputs": ["x"]}

BAD = [  # (method, path, body (dict, or raw bytes), status, param, words in the message)
    ("POST", P, b"{not json", 400, None, "not valid JSON"),
    ("POST", P, b"\xff\xfe", 400, None, "not valid JSON"),
    ("POST", P, [1, 2], 422, None, "JSON object"),
    ("POST", P, {"adapter": "sent"}, 422, "inputs", "Field required"),
    ("POST", P, {"adapter": "sent", "inputs": "x"}, 422, "inputs", "valid list"),
    ("POST", P, {"adapter": "sent", "inputs": ["x", 3]}, 422, "inputs.1", "valid string"),
    ("POST", P, {"adapter": 5, "inputs": ["x"]}, 422, "adapter", "valid string"),
    ("POST", P, {**OK, "probabilities": "yes"}, 422, "probabilities", "valid boolean"),
    ("POST", P, {**OK, "extra": 1}, 422, "extra", "Extra inputs"),
    ("POST", P, {"adapter": "sent", "inputs": []}, 400, "inputs", "empty"),
    ("POST", P, {"adapter": "sent", "inputs": ["x"] * 9}, 400, "inputs", "at most 8"),
    ("POST", P, {"inputs": ["x"]}, 400, "adapter", '"adapters" (one per row)'),
    ("POST", P, {"adapter": "sent", "adapters": ["sent"], "inputs": ["x"]}, 400, "adapter", "not both"),
    ("POST", P, {"adapters": ["sent"], "inputs": ["x", "y"]}, 400, "adapters", "1 names but inputs has 2"),
    ("POST", P, {"adapter": "nope", "inputs": ["x"]}, 404, "adapter", "unknown adapter 'nope'"),
    ("POST", P, {"adapters": ["sent", "zz", "../x"], "inputs": ["a", "b", "c"]}, 404, "adapters", "'../x', 'zz'"),
    ("POST", P, {"adapter": "sent", "inputs": ["fine", ""]}, 400, "inputs.1", "inputs.1 is empty"),
    ("POST", P, {"adapter": "ner", "inputs": ["   "]}, 400, "inputs.0", "empty"),
    ("POST", P, {**OK, "max_new_tokens": 0}, 400, "max_new_tokens", ">= 1"),
    ("POST", P, {"adapter": "alien", "inputs": ["x"]}, 400, "adapter", "made for base 'tiny-llama'"),
    ("POST", P, {**OK, "max_new_tokens": 10_000}, 400, "max_new_tokens", "<= 256"),
    ("POST", P, {"adapter": "sent", "inputs": ["x" * 3000]}, 413, None, "larger than the limit"),
    ("GET", P, None, 405, None, "no route for GET /v1/predict"),
    ("GET", "/v2/nothing", None, 404, None, "no route"),
    ("POST", C, {"model": "sent", "prompt": "x"}, 400, "model", "completions need a causal-lm adapter"),
    ("POST", C, {"model": "tiny-bert", "prompt": "x"}, 400, "model", "has no LM head"),
    ("POST", C, {"model": "nope", "prompt": "x"}, 404, "model", "unknown adapter 'nope'"),
    ("POST", C, {"model": "sent", "prompt": 3}, 422, "prompt", "valid string"),
    ("POST", C, {"model": "sent", "prompt": "x", "seed": 1}, 400, "seed", "seed=1 is not supported"),
    ("POST", C, {"model": "sent", "prompt": "x", "echo": True}, 400, "echo", "not supported"),
    ("POST", C, {"model": "sent", "prompt": "x", "logprobs": 2}, 400, "logprobs", "not supported"),
    ("POST", C, {"model": "sent", "prompt": "x", "temperature": "hot"}, 422, "temperature", "valid number"),
    ("POST", C, {"prompt": "x"}, 422, "model", "Field required"),
    ("POST", CHAT, {"model": "sent", "messages": []}, 400, "messages", "empty"),
    ("POST", CHAT, {"model": "sent", "messages": [{"role": "user"}]}, 422, "messages.0.content", "required"),
    ("POST", CHAT, {"model": "sent", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 422,
     "messages.0.content.0.type", "'text'"),
    ("POST", CHAT, {"model": "sent", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2,
                    "max_completion_tokens": 2}, 400, "max_completion_tokens", "not both"),
    ("POST", "/v1/adapters", {"source": "nope"}, 404, "source", "no adapter named 'nope' in the store"),
    ("POST", "/v1/adapters", {"source": "./nope"}, 404, "source", "no adapter directory './nope' on the server"),
    ("POST", "/v1/adapters", {"source": "topic", "version": 7}, 404, "source", "no version 7"),
    ("POST", "/v1/adapters", {"source": "sent"}, 409, "name", "already loaded; pass \"replace\": true"),
    ("POST", "/v1/adapters", {"source": "sent", "name": "bad name!"}, 400, "name", "bad name!"),
    ("POST", "/v1/adapters", {"source": "sent", "replace": "yes"}, 422, "replace", "valid boolean"),
    ("POST", "/v1/adapters", {"name": "x"}, 422, "source", "Field required"),
    ("DELETE", "/v1/adapters/nope", None, 404, "name", "'nope' is not loaded"),
    ("DELETE", "/v1/adapters/topic", None, 404, "name", "stored adapters stay in the store"),
    ("POST", "/v1/adapters/nope/pin", None, 404, "name", "unknown adapter 'nope'"),
    ("POST", "/v1/adapters/sent/unpin", None, 404, "name", "not pinned"),
    ("GET", "/v1/models/nope", None, 404, "model", "unknown adapter 'nope'"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from adapterhub import AdapterModel
    from conftest import make_tokenizer, tiny_llama

    store = bert_store(tmp_path_factory.mktemp("serve-inputs") / "store")
    alien = AdapterModel(tiny_llama(), make_tokenizer(causal=True), base_id="tiny-llama")
    alien.add_adapter("alien", LoRA(r=2), labels=["x", "y"])
    alien.store_adapter("alien", store=store)  # stored, but made for another base
    model = bert_model(store)
    model.load_adapter("sent", store=store)
    with serving(model, max_batch_rows=8, max_body_bytes=2048) as srv:
        yield srv


@pytest.mark.parametrize("method,path,body,status,param,words", BAD,
                         ids=[f"{m} {p} {i}" for i, (m, p, *_r) in enumerate(BAD)])
def test_bad_input_is_a_4xx_naming_the_field(server, method, path, body, status, param, words):
    raw = body if isinstance(body, bytes) else None
    got, headers, answer = call(server, method, path, None if raw is not None else body, raw=raw)
    assert got == status, answer
    assert headers["Content-Type"] == "application/json"
    err = answer["error"]
    assert err["param"] == param and words in err["message"], err
    assert err["code"] == status and err["type"]


def test_the_server_still_serves_after_the_bad_inputs(server):
    status, _, body = call(server, "POST", P, {"adapter": "sent", "inputs": TEXTS[:2], "probabilities": True})
    assert status == 200 and len(body["predictions"]) == 2
    long = "the film was good " * 30  # past the context: cut at the adapter's max_length, as predict does
    status, _, body = call(server, "POST", P, {"adapters": ["sent", "ner"], "inputs": [long, long]})
    assert status == 200 and len(body["predictions"][1]["tags"]) == len(long.split())  # tagged in windows
    assert call(server, "GET", "/ready")[0] == 200


def test_stream_text_rules():
    words = {1: "the", 2: " fi", 3: "lm", 4: " was", 5: " good", 6: " w", 7: "as", 8: "ork"}
    decode = lambda ids: "".join(words[i] for i in ids)  # noqa: E731
    assert first_stop("a film was", ["was", "film"]) == 2 and first_stop("abc", ["x"]) is None
    assert holdback("the fi", [" film"]) == 3 and holdback("the", ["xyz"]) == 0
    row = RowText(decode, max_tokens=10, stops=[" was"], incremental=True)
    assert [row.add(t) for t in (1, 2, 3, 4)] == ["the", " fi", "lm", ""]
    assert row.text == "the film" and row.reason == "stop"
    row = RowText(decode, max_tokens=10, stops=[" was"], incremental=True)
    assert [row.add(t) for t in (1, 6, 7)] == ["the", "", ""] and row.text == "the"  # " w" held: maybe " was"
    row = RowText(decode, max_tokens=10, stops=[" was"], incremental=True)
    assert [row.add(t) for t in (1, 6, 8)] == ["the", "", " work"] and row.reason is None  # it was not
    row = RowText(decode, max_tokens=2, stops=[], incremental=False)
    assert row.add(1) == "" and row.add(5) == "the good" and row.output().finish_reason == "length"
    row = RowText(decode, max_tokens=5, stops=[], incremental=True)
    assert row.add(1) == "the" and row.close("stop") == "" and row.output().completion_tokens == 1


def test_serve_command_sigterm_drains_and_exits(tmp_path):
    """``adapterhub serve`` as a process: base from the adapters' cards, a token file, SIGTERM -> exit 0."""
    from adapterhub import AdapterModel
    from adapterhub.store import Store
    from conftest import make_tokenizer, tiny_bert

    d = tmp_path / "base"
    tiny_bert().save_pretrained(d)
    make_tokenizer().save_pretrained(d)
    store = Store(tmp_path / "home" / "store")
    src = AdapterModel.from_pretrained(str(d))
    src.add_adapter("sent", LoRA(r=2), labels=["neg", "pos"])
    src.store_adapter("sent", store=store)
    want = src.predict(TEXTS[:2], adapters="sent")
    (tmp_path / "token").write_text("abc123\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ADAPTERHUB_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from adapterhub.cli import main; "
                             "sys.exit(main())", "serve", "--adapters", "sent", "--port", "0", "--token-file",
                             str(tmp_path / "token")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"at (http://127\.0\.0\.1:(\d+))", line)
        assert m, line + proc.stderr.read()[-3000:]

        class At:
            host, port = "127.0.0.1", int(m.group(2))

        status, _, body = call(At, "POST", P, {"adapter": "sent", "inputs": TEXTS[:2]}, token="abc123")
        assert status == 200 and [r["label"] for r in body["predictions"]] == want
        assert call(At, "GET", "/v1/adapters", token="abc123")[2]["resident"][0]["pinned"] is True
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        assert "adapterhub serve stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_serve_command_errors(tmp_path, capsys):
    from adapterhub.cli import main

    assert main(["serve", "--store", str(tmp_path / "s")]) == 2
    assert "give --base SPEC, or --adapters" in capsys.readouterr().err
    assert main(["serve", "--adapters", "nope", "--store", str(tmp_path / "s")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["serve", "--adapters", "a", "b", "--max-resident", "1", "--store", str(tmp_path / "s")]) == 2
    assert "--max-resident is 1" in capsys.readouterr().err
    assert main(["serve", "--base", "x", "--max-wait-ms", "-1"]) == 2
    (tmp_path / "tok").write_text("two words")
    assert main(["serve", "--base", "x", "--token-file", str(tmp_path / "tok")]) == 2
    assert "must hold one token" in capsys.readouterr().err


def test_scheduler_batches_by_kind_rows_and_residency():
    """The oldest job goes with the later ones of its kind that fit ``max_batch_rows`` and, with ``max_resident``,
    the distinct adapters the model may hold at once (pinned ones count); the others wait, in order."""
    import asyncio

    from adapterhub.serving import ServeSettings
    from adapterhub.serving.scheduler import Job, Scheduler

    class Tagged(Job):
        def __init__(self, tag, key, rows, names):
            super().__init__(rows, frozenset(names))
            self.tag, self.key = tag, key

    async def main():
        ran = []

        def run(jobs):
            ran.append([j.tag for j in jobs])
            for j in jobs:
                j.resolve(j.tag)

        s = Scheduler(run, ServeSettings(max_batch_rows=4, max_wait_ms=0), capacity=lambda: (2, {"p"}))
        jobs = [Tagged(1, "x", 2, {"a"}), Tagged(2, "y", 1, {"a"}), Tagged(3, "x", 2, {"b"}), Tagged(4, "x", 1, {"a"}),
                Tagged(5, "x", 2, {"a"})]
        for j in jobs:
            s.submit(j)
        s.start()
        assert await asyncio.gather(*(j.future for j in jobs)) == [1, 2, 3, 4, 5]
        s.stop()
        return ran

    assert asyncio.run(main()) == [[1, 4], [2], [3], [5]]
