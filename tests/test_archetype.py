"""The archetype preprocessor, end to end on the tiny dataset with a tiny real causal LM."""
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from conftest import DATASET, copy_dataset, tiny_config
from recbole_genair.archetype import load_settings, run_archetype
from recbole_genair.archetype.backends import load_llm, prompt_token_ids
from recbole_genair.archetype.items import ItemFileError, build_prompt, read_items, resolve_field_map
from recbole_genair.archetype.pipeline import make_prompts
from recbole_genair.archetype.pooling import last_layer_states
from recbole_genair.archetype.settings import SettingsError
from recbole_genair.quick_start import run_recbole_genair
from tiny_llm import build_tiny_llm

FIELDS = {"name": "title", "category": "category", "brand": "brand"}


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory):
    return str(build_tiny_llm(tmp_path_factory.mktemp("tiny-llm")))


def dataset_without_vectors(tmp_path, name="arch"):
    folder = copy_dataset(tmp_path, name)
    (folder / f"{name}.itememb").unlink()
    return folder


def settings_for(folder, llm, **overrides):
    values = {"data_path": str(folder), "llm_model": llm, "prompt_fields": FIELDS, "max_new_tokens": 6,
              "batch_size": 8, "embed_batch_size": 8, "pca_components": 6, "threads": 1}
    values.update(overrides)
    return load_settings(folder.name, config_dict=values)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_end_to_end_texts_vectors_and_itememb_load_into_genair(tmp_path, tiny_llm_dir):
    folder = dataset_without_vectors(tmp_path)
    summary = run_archetype(settings_for(folder, tiny_llm_dir))
    items = read_items(folder, "arch").ids
    records = read_jsonl(folder / "arch.archetype")
    assert sorted(r["id"] for r in records) == sorted(items)
    assert all(r["prompt"].startswith("You are a helpful recommendation expert.") for r in records)
    assert [fit["components"] for fit in summary["pca"]] == [6, 6]
    assert summary["empty_name"] == len([i for i in items if int(i) % 17 == 0]) > 0  # empty titles, still prompted
    with open(folder / "arch.itememb", encoding="utf-8") as f:
        assert f.readline() == "iid:token\titem_emb:float_seq\n"
        rows = [line.split("\t") for line in f]
    assert len(rows) == len(items) and all(len(r[1].split()) == 12 for r in rows)
    raw = np.fromfile(summary["raw_vectors"], dtype=np.float32).reshape(len(items), 2, 32)
    assert np.isfinite(raw).all()  # raw pooled vectors are kept for a PCA without the LLM
    config = tiny_config(tmp_path, data_path=str(tmp_path / "data"), dataset="arch")
    result = run_recbole_genair("SASRecGenAIR", config_dict=config, saved=False)
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0


def test_prefill_only_embeds_the_prompts_without_generating(tmp_path, tiny_llm_dir):
    """`archetype_views: prefill`: no archetype is written, each item's vector is the PCA of its prompt's mean state
    (the full run's prefill view), the .itememb has prefill columns only, and GenAIR trains on it with either
    llm_views setting that keeps them."""
    full = dataset_without_vectors(tmp_path / "full")
    run_archetype(settings_for(full, tiny_llm_dir))
    folder = dataset_without_vectors(tmp_path)
    summary = run_archetype(settings_for(folder, tiny_llm_dir, archetype_views="prefill"))
    items = read_items(folder, "arch").ids
    assert summary["generated"] == 0 and summary["archetype_tokens"] == 0
    assert all(r["archetype"] == "" for r in read_jsonl(folder / "arch.archetype"))
    raw = np.fromfile(summary["raw_vectors"], dtype=np.float32).reshape(len(items), 2, 32)
    raw_full = np.fromfile(full / "arch.archetype-work" / "assembled.f32", dtype=np.float32).reshape(len(items), 2, 32)
    np.testing.assert_allclose(raw[:, 0], raw_full[:, 0], atol=1e-5)
    assert not raw[:, 1].any()
    meta = json.loads((folder / "arch.itememb.json").read_text())
    assert meta["views"] == {"prefill": 6, "decoding": 0} and meta["columns"] == 6
    with open(folder / "arch.itememb", encoding="utf-8") as f:
        f.readline()
        assert all(len(line.split("\t")[1].split()) == 6 for line in f)
    for views in ("both", "prefill"):
        config = tiny_config(tmp_path, data_path=str(tmp_path / "data"), dataset="arch", llm_views=views)
        assert 0.0 <= run_recbole_genair("SASRecGenAIR", config_dict=config, saved=False)["test_result"]["ndcg@10"] <= 1


def test_teacher_forced_states_equal_generation_states_with_padding(tiny_llm_dir):
    settings = load_settings(DATASET, config_dict={"llm_model": tiny_llm_dir})
    model, tokenizer, device = load_llm(settings)
    prompts = [prompt_token_ids(tokenizer, p) for p in ("The item name is Office item.", "Pens " * 9 + "Paper")]
    assert len(prompts[0]) != len(prompts[1])  # the batch needs left padding
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False, min_new_tokens=5,
                         output_hidden_states=True, return_dict_in_generate=True, pad_token_id=0)
    generated = out.sequences[:, width:].tolist()
    forced = last_layer_states(model, [p + g for p, g in zip(prompts, generated)], 0, device)
    for row, p in enumerate(prompts):
        during = [out.hidden_states[0][-1][row, width - len(p):]]  # prefill states of the real tokens
        during += [step[-1][row, -1:] for step in out.hidden_states[1:]]  # one state per fed-back token
        during = torch.cat(during)
        assert torch.allclose(forced[row][: len(during)], during, atol=1e-4)
        assert forced[row].shape[0] == len(during) + 1  # plus the last generated token


def test_killed_run_resumes_with_every_item_once(tmp_path, tiny_llm_dir):
    """A run killed with SIGKILL resumes: the items it finished are never asked for again, every other item is
    asked for once, and every item ends with one text and one vector. The kill comes at a fixed point, not after
    a delay: a local server answers the first 6 requests and holds the 7th, so the run is killed while it waits
    for its 4th batch, with 3 batches (6 items) written, however slow the machine."""
    server = CompletionServer(empty_for=None, hold_after=6)
    folder = dataset_without_vectors(tmp_path, "killed")
    flags = [f"--data_path={folder}", f"--llm_model={tiny_llm_dir}", f"--prompt_fields={json.dumps(FIELDS)}",
             "--backend=openai", f"--api_base={server.url}", "--api_model=tiny", "--api_timeout=3600",
             "--batch_size=2", "--embed_batch_size=2", "--pca_components=4"]
    output = tmp_path / "killed-run.log"
    with open(output, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "recbole_genair.archetype", "--dataset=killed", *flags],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 900  # only a failure waits that long; a pass waits for the held request
        while not server.held.wait(0.1):
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"the run never asked for its 7th text:\n{output.read_text()[-3000:]}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        server.release()
    work = folder / "killed.archetype-work"
    finished = [t["id"] for t in read_jsonl(work / "texts.jsonl")]
    assert len(finished) == 6 and (work / "vectors.ids").read_text().split() == finished
    assert not (folder / "killed.itememb").exists()
    asked_before = len(server.requests)
    settings = load_settings("killed", cmd_args=flags)
    item_of = {prompt: item for item, prompt in make_prompts(settings)[1].items()}
    run_archetype(settings)
    server.httpd.shutdown()
    items = read_items(folder, "killed").ids
    asked = [item_of[body["messages"][0]["content"]] for _, body in server.requests[asked_before:]]
    assert sorted(asked) == sorted(set(items) - set(finished))
    assert sorted(r["id"] for r in read_jsonl(folder / "killed.archetype")) == sorted(items)
    assert sorted(t["id"] for t in read_jsonl(work / "texts.jsonl")) == sorted(items)
    assert sorted((work / "vectors.ids").read_text().split()) == sorted(items)


def test_prompt_follows_table_1_and_skips_empty_fields(tmp_path):
    settings = load_settings(DATASET, config_dict={"max_field_chars": 12})
    prompt, n = build_prompt({"title": "A very long office item title", "category": "", "brand": "Acme"},
                             FIELDS, settings)
    assert prompt == (
        "You are a helpful recommendation expert. Based on the following attributes, identify the types of users "
        "this item would appeal to: The item name is A very long. The item brand is Acme. "
        "What potential users align best with this item?"
    )
    assert n == 2
    empty, n = build_prompt({}, FIELDS, settings)
    assert n == 0 and "The item" not in empty.split(":", 1)[1]


def test_ml100k_header_is_recognised():
    settings = load_settings("ml-100k")
    table = read_items(settings["data_path"], "ml-100k")
    field_map = resolve_field_map(settings, table)
    prompt, n = build_prompt(table.fields["1"], field_map, settings)
    assert "The item name is Toy Story. The item date is 1995. The item genre is Animation Children's Comedy." in prompt


def test_missing_item_file_is_explained(tmp_path):
    folder = dataset_without_vectors(tmp_path, "noitem")
    (folder / "noitem.item").unlink()
    with pytest.raises(ItemFileError, match=r"noitem\.item does not exist"):
        read_items(folder, "noitem")


def test_unknown_field_lists_the_file_fields(tmp_path, tiny_llm_dir):
    folder = dataset_without_vectors(tmp_path, "badfield")
    settings = settings_for(folder, tiny_llm_dir, prompt_fields={"name": "headline"})
    with pytest.raises(ItemFileError, match=r"no field\(s\) \['headline'\].*\['item_id', 'title', 'category', 'brand', 'price'\]"):
        run_archetype(settings)


def test_empty_metadata_and_non_utf8_are_reported_and_still_prompted(tmp_path, tiny_llm_dir, caplog):
    folder = dataset_without_vectors(tmp_path, "dirty")
    lines = (folder / "dirty.item").read_bytes().split(b"\n")
    lines[3] = b"3\t\t\t\t"  # item 3: no metadata at all
    lines[5] = b"5\tCaf\xe9 pens\tPens\tAcme\t7.50"  # latin-1 byte
    (folder / "dirty.item").write_bytes(b"\n".join(lines))
    caplog.set_level(logging.WARNING)
    summary = run_archetype(settings_for(folder, tiny_llm_dir))
    assert summary["empty_metadata"] == 1
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "1 items have no metadata" in messages and "'3'" in messages
    assert "1 lines of" in messages and "not valid UTF-8" in messages and "item '5'" in messages
    records = {r["id"]: r for r in read_jsonl(folder / "dirty.archetype")}
    assert "Caf\ufffd pens" in records["5"]["prompt"]
    assert records["3"]["prompt"].endswith("What potential users align best with this item?")


def test_other_settings_are_not_mixed_in(tmp_path, tiny_llm_dir):
    folder = dataset_without_vectors(tmp_path, "mixed")
    run_archetype(settings_for(folder, tiny_llm_dir))
    with pytest.raises(SettingsError, match=r"other settings \(changed: \['max_new_tokens'\]\).*--overwrite=True"):
        run_archetype(settings_for(folder, tiny_llm_dir, max_new_tokens=3))
    run_archetype(settings_for(folder, tiny_llm_dir, max_new_tokens=3, overwrite=True))


def test_shards_merge_into_the_same_outputs(tmp_path, tiny_llm_dir):
    whole = dataset_without_vectors(tmp_path / "a", "shard")
    run_archetype(settings_for(whole, tiny_llm_dir))
    parts = dataset_without_vectors(tmp_path / "b", "shard")
    for i in range(2):
        run_archetype(settings_for(parts, tiny_llm_dir, shard=f"{i}/2"))
    assert not (parts / "shard.itememb").exists()
    run_archetype(settings_for(parts, tiny_llm_dir, merge=True))
    expected = {r["id"]: r["archetype"] for r in read_jsonl(whole / "shard.archetype")}
    assert {r["id"]: r["archetype"] for r in read_jsonl(parts / "shard.archetype")} == expected
    raw_whole = np.fromfile(whole / "shard.archetype-work" / "assembled.f32", dtype=np.float32)
    raw_parts = np.fromfile(parts / "shard.archetype-work" / "assembled.f32", dtype=np.float32)
    np.testing.assert_allclose(raw_parts, raw_whole, atol=1e-4)


class CompletionServer:
    """A local OpenAI-compatible server: archetype = 'Fans of <first words>'; empty for prompts holding `empty_for`.

    With `hold_after=n` it answers the first n requests and holds the later ones until `release()`, then drops
    them unanswered (their client is gone by then); `held` is set when the first one is held.
    """

    def __init__(self, empty_for="Office item 3 ", hold_after=None):
        self.requests = []
        self.held, self.released, lock = threading.Event(), threading.Event(), threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    outer.requests.append((self.path, body))
                    hold = hold_after is not None and len(outer.requests) > hold_after and not outer.released.is_set()
                if hold:
                    outer.held.set()
                    outer.released.wait()
                    return
                prompt = body["messages"][0]["content"]
                empty = empty_for is not None and empty_for in prompt
                text = "" if empty else "Fans of " + prompt.split("The item name is ")[-1][:20]
                reply = {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def release(self):
        self.released.set()


def test_openai_compatible_backend_writes_texts_and_retries_empty_ones(tmp_path, tiny_llm_dir):
    server = CompletionServer()
    folder = dataset_without_vectors(tmp_path, "api")
    summary = run_archetype(settings_for(folder, tiny_llm_dir, backend="openai", api_base=server.url, api_model="tiny"))
    server.httpd.shutdown()
    records = {r["id"]: r for r in read_jsonl(folder / "api.archetype")}
    assert records["1"]["archetype"].startswith("Fans of Office item 1")
    assert summary["empty_archetypes"] == ["3"]  # retried once, then reported
    paths = [p for p, _ in server.requests]
    assert set(paths) == {"/v1/chat/completions"}
    item3 = [b for _, b in server.requests if "Office item 3 " in b["messages"][0]["content"]]
    assert len(item3) == 2 and item3[0]["temperature"] == 0.0 and item3[1]["temperature"] > 0
    assert (folder / "api.itememb").exists()
