import contextlib
import math
import shutil
import signal
import socket
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

# Tiny models: thread start-up costs more than it saves.
torch.set_num_threads(1)

from recbole_genair.config import Config
from recbole_genair.data import create_dataset
from recbole_genair.quick_start import prepare_data, run_recbole_genair

TEST_DATA = Path(__file__).resolve().parent / "test_data"
DATASET = "genair-test"


def tiny_config(tmp_path, **overrides):
    """Settings for one fast epoch on the tiny dataset, everything written under tmp_path."""
    config = {
        "data_path": str(TEST_DATA),
        "dataset": DATASET,
        "checkpoint_dir": str(tmp_path / "saved"),
        "epochs": 1,
        "train_batch_size": 64,
        "eval_batch_size": 256,
        "hidden_size": 16,
        "inner_size": 32,
        "embedding_size": 16,
        "n_layers": 1,
        "MAX_ITEM_LIST_LENGTH": 10,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "normalize_all": False,
        "metrics": ["Recall", "NDCG"],
        "topk": [5, 10],
        "valid_metric": "NDCG@10",
        "show_progress": False,
        "state": "ERROR",
        "seed": 2020,
        "threads": 1,  # tiny models: thread start-up costs more than it saves
    }
    config.update(overrides)
    return config


def copy_dataset(tmp_path, name=DATASET):
    """A writable copy of the tiny dataset under tmp_path/data/<name>; returns its folder."""
    target = tmp_path / "data" / name
    shutil.copytree(TEST_DATA / DATASET, target)
    if name != DATASET:
        for file in list(target.iterdir()):
            file.rename(target / file.name.replace(DATASET, name))
    return target


def built(tmp_path, model="SASRecGenAIR", **overrides):
    """Config, dataset and training split of `model` on the tiny dataset."""
    config = Config(model, config_dict=tiny_config(tmp_path, **overrides))
    dataset = create_dataset(config)
    train_data, valid_data, test_data = prepare_data(config, dataset)
    return config, dataset, train_data


def raw_sequences():
    """{raw user id: the user's raw item ids in time order}, read from the raw file."""
    inter = pd.read_csv(TEST_DATA / "genair-test" / "genair-test.inter", sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    inter = inter.sort_values(["user_id", "timestamp"], kind="stable")
    return {str(u): list(g["item_id"].astype(str)) for u, g in inter.groupby("user_id")}


def raw_training_sequences():
    """Each user's items in time order minus the last two (validation and test), from the raw file."""
    return {int(u): items[:-2] for u, items in raw_sequences().items()}


@pytest.fixture(autouse=True)
def isolated_run(tmp_path, monkeypatch):
    """RecBole writes ./log and ./log_tensorboard: keep them in tmp; no foreign argv."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    yield


def per_user_ndcg(model, batches, k=10):
    """[(target item, NDCG@k)] of every evaluated user, recomputed from the model's own scores.

    `batches`: what a RecBole evaluation loader yields, (interaction, row_idx, positive_u, positive_i).
    Full ranking (row_idx None): every item but padding is a candidate. Sampled negatives (uni100):
    the distinct items of the user's rows are. The target's rank is 1 + the number of other
    candidates scored strictly higher.
    """
    model.eval()
    out = []
    with torch.no_grad():
        for interaction, row_idx, positive_u, positive_i in batches:
            if row_idx is None:
                scores = model.full_sort_predict(interaction).view(len(interaction), -1)
                ranks = [1 + int((scores[u, 1:] > scores[u, t]).sum())
                         for u, t in zip(positive_u.tolist(), positive_i.tolist())]
            else:
                scores = model.predict(interaction)
                items = interaction[model.ITEM_ID]
                ranks = []
                for u, t in zip(positive_u.tolist(), positive_i.tolist()):
                    rows = row_idx == u
                    candidate = dict(zip(items[rows].tolist(), scores[rows].tolist()))
                    ranks.append(1 + sum(1 for i, s in candidate.items() if i != t and s > candidate[t]))
            out += [(t, 1.0 / math.log2(r + 1) if r <= k else 0.0) for t, r in zip(positive_i.tolist(), ranks)]
    return out


def item_table_of(model):
    """A copy of the item rows (1 .. n_items - 1) the model scores with (in evaluation mode: no dropout)."""
    model.eval()
    with torch.no_grad():
        return model.item_embedding.weight[1: model.n_items].detach().clone()


def assert_one_epoch_trains_and_reports_its_ndcg(tmp_path, model, **overrides):
    """One epoch of `model` on the tiny dataset through the run function: the item table it scores with
    moved away from the initial one, and the test NDCG@10 it reports is the mean of the per-user NDCG@10
    recomputed from its scores (RecBole rounds to 4 places; one user's rank 10 -> 11 moves it by 2e-4).
    """
    from recbole_genair.quick_start import build_model

    def recompute(config, trained, train_data, test_data):
        initial = item_table_of(build_model(config, train_data))  # same seed: the run's starting point
        return initial, item_table_of(trained), per_user_ndcg(trained, test_data)

    result = run_recbole_genair(model=model, config_dict=tiny_config(tmp_path, **overrides), saved=False,
                                inspect=recompute)
    initial, trained, users = result["analysis"]
    assert float((trained - initial).abs().max()) > 1e-4
    assert len(users) == 50
    assert result["test_result"]["ndcg@10"] == pytest.approx(sum(n for _, n in users) / len(users), abs=1e-4)
    return result


@contextlib.contextmanager
def working_in(folder):
    """For module-scoped fixtures: RecBole's ./log under `folder` and no foreign argv (as `isolated_run`)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr(sys, "argv", ["pytest"])
        yield folder


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def started_server(args, folder, env=None):
    """An httpx client of `python -m recbole_genair.serve <args>` really started on a free port; on exit the
    server is stopped with SIGTERM and must have shut down cleanly, with no traceback in its log. `env`: more
    environment variables of the server."""
    import httpx

    port = free_port()
    log = open(folder / "server.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "recbole_genair.serve", *args, "--host=127.0.0.1", f"--port={port}"],
                               stdout=log, stderr=subprocess.STDOUT, cwd=folder,
                               env=None if env is None else {**os.environ, **env})
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300)  # the first POST /items loads the LLM: slow on a busy CPU
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"the server exited with {process.returncode}:\n{log.read()[-3000:]}")
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the server did not answer /health within 120 s")
            time.sleep(0.2)
        yield client
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.seek(0)
        written = log.read()
        log.close()
    # SIGTERM: uvicorn shuts down cleanly, then exits by the signal it caught; no request left a traceback
    assert process.returncode in (0, -signal.SIGTERM), written[-3000:]
    assert "Application shutdown complete" in written and "Traceback" not in written, written[-3000:]
