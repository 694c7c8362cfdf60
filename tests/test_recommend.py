"""Use a trained model (issue 18, item 1): `Recommender` and `python -m recbole_genair.recommend`."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from recbole.config import Config as RecBoleConfig

from conftest import DATASET, TEST_DATA, copy_dataset, raw_sequences, tiny_config, working_in
from recbole_genair.checkpoint import read_checkpoint
from recbole_genair.interop import recbole_config
from recbole_genair.commands.recommend import main
from recbole_genair.data.files import DatasetFilesError
from recbole_genair.model import __all__ as OUR_MODELS
from recbole_genair.quick_start import CheckpointError, load_data_and_model, run_recbole_genair
from recbole_genair.recommender import Recommender, RecommendError

RECBOLE_MODELS = ["SASRec", "GRU4Rec", "BERT4Rec"]
MAX_LEN = 10  # tiny_config's MAX_ITEM_LIST_LENGTH
# the tiny dataset has no archetype work folder (raw vectors) and 24 LLM columns
TINY_ALPHAFUSE = dict(alphafuse_source="itememb", alphafuse_null_dim=6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`trained(model)`: (checkpoint, Recommender) of one epoch of `model` on the tiny dataset, trained once."""
    cache = {}

    def get(model):
        if model not in cache:
            folder = tmp_path_factory.mktemp(model)
            with working_in(folder):
                settings = tiny_config(folder, **(TINY_ALPHAFUSE if "AlphaFuse" in model else {}))
                checkpoint = run_recbole_genair(model, config_dict=settings, saved=True)["saved_model_file"]
                cache[model] = checkpoint, Recommender.load(checkpoint)
        return cache[model]

    return get


def test_scores_are_full_sort_predict_on_recboles_own_test_users(trained):
    """For every test user of RecBole's test loader, the score of the raw history (all but the test item, from the
    raw file, more than MAX_ITEM_LIST_LENGTH items for some) equals the model's `full_sort_predict` on that loader's
    batch, column for column; BERT4Rec's mask token is appended by its own full_sort_predict in both."""
    sequences = raw_sequences()
    for model_name in RECBOLE_MODELS + OUR_MODELS:
        checkpoint, recommender = trained(model_name)
        _, model, dataset, _, _, test_data = load_data_and_model(checkpoint)
        model.eval()
        users = 0
        for interaction, _, _, positive_i in test_data:
            raw_users = dataset.id2token(dataset.uid_field, interaction[dataset.uid_field])
            histories = [sequences[u][:-1] for u in raw_users]
            # the loader's target is the raw file's last item of the same user
            assert list(dataset.id2token(dataset.iid_field, positive_i)) == [sequences[u][-1] for u in raw_users]
            with torch.no_grad():
                expected = model.full_sort_predict(interaction).view(len(raw_users), -1)[:, 1: model.n_items]
            got = recommender.score(histories)
            assert got.shape == (len(raw_users), len(recommender.item_ids)) == tuple(expected.shape)
            np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5, err_msg=model_name)
            assert max(len(h) for h in histories) > MAX_LEN
            users += len(raw_users)
        assert users == 50


def test_item_ids_are_the_rows_of_the_models_item_table(trained):
    _, recommender = trained("SASRecGenAIR")
    _, _, dataset, *_ = load_data_and_model(trained("SASRecGenAIR")[0])
    assert [dataset.token2id(dataset.iid_field, i) for i in recommender.item_ids] == list(range(1, 61))


@pytest.mark.parametrize("model", RECBOLE_MODELS + ["SASRecGenAIR", "GRU4RecTFLLMER", "BERT4RecGenAIR",
                                                    "BERT4RecFAERec", "GRU4RecLLMInit"])
def test_query_vectors_times_item_vectors_are_the_scores(trained, model):
    _, recommender = trained(model)
    histories = [["42", "46", "1"], ["7"], list(recommender.item_ids[:25])]
    vectors = recommender.item_vectors()
    assert vectors.shape[0] == len(recommender.item_ids) == 60
    np.testing.assert_allclose(recommender.query_vectors(histories) @ vectors.T, recommender.score(histories),
                               rtol=1e-5, atol=1e-5)


def test_bert4rec_item_vectors_carry_its_output_bias_as_the_last_column(trained):
    _, recommender = trained("BERT4Rec")
    model = recommender.model
    vectors = recommender.item_vectors()
    assert vectors.shape == (60, model.hidden_size + 1)
    np.testing.assert_allclose(vectors[:, -1], model.output_bias[1:61].detach().numpy())
    np.testing.assert_allclose(vectors[:, :-1], model.item_embedding.weight[1:61].detach().numpy())
    assert (recommender.query_vectors([["42"]])[:, -1] == 1).all()


def test_recommend_gives_the_best_items_of_the_scores_without_the_history(trained):
    _, recommender = trained("SASRecGenAIR")
    history = ["42", "46", "7", "42"]
    scores = dict(zip(recommender.item_ids, recommender.score([history])[0].tolist()))
    expected = sorted((i for i in scores if i not in history), key=lambda i: -scores[i])[:5]
    (result,) = recommender.recommend([history], k=5)
    assert list(result.items) == expected
    assert list(result.scores) == pytest.approx([scores[i] for i in expected])
    assert result.skipped == ()
    (with_seen,) = recommender.recommend([history], k=5, exclude_seen=False)
    assert list(with_seen.items) == sorted(scores, key=lambda i: -scores[i])[:5]


@pytest.mark.parametrize("model", ["SASRec", "BERT4Rec", "BERT4RecGenAIR"])
def test_padding_and_the_mask_token_are_never_recommended(trained, model):
    """k = the whole catalogue gives each catalogue item once, and nothing else: row 0 and the mask row are no ids."""
    _, recommender = trained(model)
    n = len(recommender.item_ids)
    (everything,) = recommender.recommend([["42"]], k=n, exclude_seen=False)
    assert sorted(everything.items) == sorted(recommender.item_ids) and len(everything.items) == n == 60
    assert list(everything.scores) == sorted(everything.scores, reverse=True)
    (unseen,) = recommender.recommend([["42", "46"]], k=n - 2)
    assert set(unseen.items) == set(recommender.item_ids) - {"42", "46"}


def test_a_batch_gives_what_each_history_gives_alone(trained):
    _, recommender = trained("GRU4RecGenAIR")
    histories = [["42", "46"], ["7"], list(raw_sequences()["1"])]
    together = recommender.recommend(histories, k=7)
    for history, result in zip(histories, together):
        (alone,) = recommender.recommend([history], k=7)
        assert alone.items == result.items and list(alone.scores) == pytest.approx(list(result.scores), abs=1e-6)


def test_only_the_most_recent_items_of_a_long_history_count(trained):
    _, recommender = trained("SASRecGenAIR")
    recent = list(recommender.item_ids[10: 10 + MAX_LEN])
    long_history = list(recommender.item_ids[:10]) + recent
    np.testing.assert_allclose(recommender.score([long_history]), recommender.score([recent]), atol=1e-6)


def test_unknown_ids_are_listed_by_history(trained):
    _, recommender = trained("SASRec")
    with pytest.raises(RecommendError, match=r"3 item ids are not in the catalogue of SASRec \(60 items.*"
                                             r"history 0: 'nope'; history 2: 'x', '\[PAD\]'.*unknown='skip'"):
        recommender.recommend([["42", "nope"], ["7"], ["x", "46", "[PAD]"]], k=3)


def test_unknown_ids_are_skipped_when_asked(trained):
    _, recommender = trained("SASRec")
    skipped, known = recommender.recommend([["42", "nope", "46"], ["42", "46"]], k=4, unknown="skip")
    assert skipped.skipped == ("nope",) and known.skipped == ()
    assert skipped.items == known.items and skipped.scores == known.scores


@pytest.mark.parametrize("histories, message", [
    ([[]], r"history 0 is empty: give at least one raw item id"),
    ([["42"], []], r"history 1 is empty"),
    ([], r"no histories given"),
    (["42", "46"], r"history 0 is '42', not a list of item ids: `histories` is a batch; for one history pass \[history\]"),
])
def test_empty_and_malformed_histories_are_refused(trained, histories, message):
    _, recommender = trained("SASRec")
    with pytest.raises(RecommendError, match=message):
        recommender.recommend(histories, k=3)


def test_a_history_of_unknown_ids_only_is_refused_even_when_skipping(trained):
    _, recommender = trained("SASRec")
    with pytest.raises(RecommendError, match=r"history 0 has no item of the catalogue: all its ids are unknown \('a', 'b'\)"):
        recommender.recommend([["a", "b"]], k=3, unknown="skip")


def test_k_beyond_the_items_left_is_refused(trained):
    _, recommender = trained("SASRec")
    with pytest.raises(RecommendError, match=r"k=61 is larger than the 60 items SASRec can recommend.*k <= 60"):
        recommender.recommend([["42"]], k=61)
    with pytest.raises(RecommendError, match=r"k=59 is larger than the 58 items left for history 1: the catalogue's "
                                             r"60 items minus the 2 it holds \(exclude_seen=True\); ask for k <= 58"):
        recommender.recommend([["42"], ["42", "46", "42"]], k=59)
    assert len(recommender.recommend([["42"], ["42", "46"]], k=59, exclude_seen=False)[1].items) == 59
    for k in (0, -1, 2.5, True):
        with pytest.raises(RecommendError, match=r"give a whole number of items"):
            recommender.recommend([["42"]], k=k)


def test_export_writes_the_item_table_and_its_raw_ids_in_row_order(trained, tmp_path):
    checkpoint, recommender = trained("BERT4RecGenAIR")
    vectors_file, ids_file = recommender.export(tmp_path / "ann")
    vectors, meta = np.load(vectors_file), json.loads(ids_file.read_text())
    assert meta["item_ids"] == list(recommender.item_ids) and meta["bias_column"] is True
    assert meta["model"] == "BERT4RecGenAIR" and meta["dataset"] == DATASET and meta["checkpoint"] == checkpoint
    np.testing.assert_array_equal(vectors, recommender.item_vectors())
    # an inner-product search over the export ranks as recommend() does
    history = ["42", "46"]
    best = np.argsort(-(recommender.query_vectors([history]) @ vectors.T)[0], kind="stable")
    assert [meta["item_ids"][j] for j in best[:3]] == list(recommender.recommend([history], k=3, exclude_seen=False)[0].items)


def test_the_command_prints_raw_ids_and_scores_and_exports(trained, tmp_path):
    checkpoint, recommender = trained("SASRecGenAIR")
    done = subprocess.run([sys.executable, "-m", "recbole_genair.recommend", f"--checkpoint={checkpoint}",
                           "--history=42,46,7", "--history=1", "--k=4", f"--export={tmp_path / 'out'}"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line.split("\t") for line in done.stdout.strip().splitlines()]
    assert lines[0] == ["history", "rank", "item_id", "score"]
    expected = recommender.recommend([["42", "46", "7"], ["1"]], k=4)
    for n, result in enumerate(expected):
        rows = [line for line in lines[1:] if line[0] == str(n)]
        assert [r[2] for r in rows] == list(result.items) and [r[1] for r in rows] == ["1", "2", "3", "4"]
        assert [float(r[3]) for r in rows] == pytest.approx(list(result.scores), rel=1e-5)
    assert json.loads((tmp_path / "out" / "item_ids.json").read_text())["item_ids"] == list(recommender.item_ids)


def test_the_console_script_exits_zero_and_prints_the_same(trained, tmp_path):
    """`recbole-genair-recommend` as setup.cfg installs it: `sys.exit(console.recommend())` succeeds."""
    checkpoint, _ = trained("SASRecGenAIR")
    args = ["--checkpoint=" + str(checkpoint), "--history=42,46,7", "--k=4"]
    script = ("import sys; from recbole_genair.commands.console import recommend; "
              f"sys.argv = ['recbole-genair-recommend'] + {args!r}; sys.exit(recommend())")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    module = subprocess.run([sys.executable, "-m", "recbole_genair.recommend", *args], capture_output=True, text=True,
                            cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == module.stdout and done.stdout.count("\n") == 5


def test_every_console_script_is_a_function_of_the_console_module():
    import configparser
    import importlib

    parser = configparser.ConfigParser()
    parser.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    scripts = [line.split("=") for line in parser["options.entry_points"]["console_scripts"].strip().splitlines()]
    assert len(scripts) == 5
    for name, target in scripts:
        module, function = target.strip().split(":")
        assert module == "recbole_genair.commands.console", name
        assert callable(getattr(importlib.import_module(module), function))


def test_the_command_reports_bad_input_as_an_error_line(trained):
    checkpoint, _ = trained("SASRec")
    with pytest.raises(SystemExit, match=r"error: 1 item id is not in the catalogue.*'zz'.*--unknown=skip"):
        main([f"--checkpoint={checkpoint}", "--history=42,zz"])
    with pytest.raises(SystemExit, match=r"error: history 0 is empty"):
        main([f"--checkpoint={checkpoint}", "--history="])


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*missing\.pth: give a \.pth file that recbole_genair"):
        Recommender.load(tmp_path / "missing.pth")
    text = TEST_DATA / DATASET / f"{DATASET}.itememb.json"
    with pytest.raises(CheckpointError, match=r"itememb\.json is not a PyTorch checkpoint \(it starts with b'\{"):
        Recommender.load(text)
    torch.save({"item_embedding.weight": torch.zeros(3, 2)}, tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match=r"weights\.pth is not a RecBole checkpoint: it has no 'config' and "
                                              r"'state_dict' \(it holds 'item_embedding.weight'\)"):
        Recommender.load(tmp_path / "weights.pth")


def test_a_checkpoint_of_recboles_own_run_function_is_refused(tmp_path, trained):
    checkpoint, _ = trained("SASRec")
    saved = torch.load(checkpoint, weights_only=False)
    saved["config"] = RecBoleConfig("SASRec", DATASET, config_dict=tiny_config(tmp_path, train_neg_sample_args=None))
    torch.save(saved, tmp_path / "recbole.pth")
    with pytest.raises(CheckpointError, match=r"recbole\.pth stores Python objects besides tensors .* can run any code"):
        Recommender.load(tmp_path / "recbole.pth")
    with pytest.raises(CheckpointError, match=r"recbole\.pth was not written by recbole_genair's run function \(its "
                                              r"config is a recbole\.config\.configurator\.Config.*--model=SASRec --dataset=genair-test"):
        Recommender.load(tmp_path / "recbole.pth", trust_checkpoint=True)


def test_a_general_model_is_refused(tmp_path):
    checkpoint = run_recbole_genair("BPR", config_dict=tiny_config(tmp_path), saved=True)["saved_model_file"]
    with pytest.raises(CheckpointError, match=r"holds BPR, a general model: the Recommender ranks items for item histories"):
        Recommender.load(checkpoint)


def _as_format_1(checkpoint):
    """Rewrite `checkpoint` as recbole_genair 0.1 wrote it: RecBole's pickled Config, no training columns."""
    saved = read_checkpoint(checkpoint)
    saved["config"] = recbole_config(saved["config"])
    for key in ("recbole_genair_checkpoint", "training_columns", "user_num"):
        del saved[key]
    torch.save(saved, checkpoint)


def _trained_on_a_copy(tmp_path, model="SASRec"):
    folder = copy_dataset(tmp_path, "moving")
    config = tiny_config(tmp_path, dataset="moving", data_path=str(folder.parent))
    return folder, run_recbole_genair(model, config_dict=config, saved=True)["saved_model_file"]


def _rename_item(folder, old, new):
    """Rename an item in the interaction and item files; the LLM vectors come from the checkpoint then."""
    for file in folder.iterdir():
        if file.suffix in (".itememb", ".json"):
            file.unlink()
        elif file.suffix in (".inter", ".item"):
            column = 1 if file.suffix == ".inter" else 0
            rows = [line.split("\t") for line in file.read_text().splitlines()]
            for row in rows:
                row[column] = new if row[column] == old else row[column]
            file.write_text("\n".join("\t".join(row) for row in rows) + "\n")


@pytest.mark.parametrize("model", ["SASRec", "SASRecGenAIR"])
def test_a_dataset_whose_items_changed_since_training_is_refused(tmp_path, model):
    """Same number of items, one renamed: the weights would load, onto the wrong items."""
    folder, checkpoint = _trained_on_a_copy(tmp_path, model)
    _rename_item(folder, "42", "4242")
    with pytest.raises(CheckpointError, match=r"was trained on 60 items of dataset 'moving', but .*moving now gives 60 "
                                              r"items, \d+ of them in other rows, e\.g\. row \d+: '\w+' at training, '\w+' now: "
                                              r"the dataset's files changed since training.*Restore the files"):
        load_data_and_model(checkpoint)


def test_an_older_checkpoint_without_item_ids_on_fewer_items_is_refused(tmp_path):
    folder, checkpoint = _trained_on_a_copy(tmp_path)
    _as_format_1(checkpoint)
    saved = torch.load(checkpoint, weights_only=False)
    del saved["item_ids"], saved["recbole_genair_version"]
    torch.save(saved, checkpoint)
    inter = folder / "moving.inter"
    inter.write_text("\n".join(line for line in inter.read_text().splitlines() if line.split("\t")[1] != "42") + "\n")
    with pytest.raises(CheckpointError, match=r"its weights do not fit SASRec as recbole_genair .* builds it on moving "
                                              r"\(size mismatch for item_embedding\.weight.*did not record its version"):
        Recommender.load(checkpoint, trust_checkpoint=True)


def test_a_checkpoint_loads_without_its_dataset_and_an_older_one_follows_it_to_another_folder(tmp_path):
    folder, checkpoint = _trained_on_a_copy(tmp_path, "SASRecGenAIR")
    before = Recommender.load(checkpoint).recommend([["42", "46"]], k=5)
    moved = tmp_path / "elsewhere" / "moving"
    moved.parent.mkdir()
    folder.rename(moved)
    assert Recommender.load(checkpoint).recommend([["42", "46"]], k=5) == before  # no dataset file is read
    _as_format_1(checkpoint)
    with pytest.raises(DatasetFilesError, match=r"the folder .*data/moving does not exist"):
        Recommender.load(checkpoint, trust_checkpoint=True)
    assert Recommender.load(checkpoint, data_path=moved, trust_checkpoint=True).recommend([["42", "46"]], k=5) == before
    older = Recommender.load(checkpoint, data_path=moved.parent, trust_checkpoint=True)
    assert older.recommend([["42", "46"]], k=5) == before
    older.save(tmp_path / "safe.pth")  # saving an older checkpoint again writes the self-contained format
    _rename_item(moved, "46", "4646")
    with pytest.raises(CheckpointError, match=r"trained on 60 items of dataset 'moving', but .*elsewhere/moving now gives"):
        Recommender.load(checkpoint, data_path=moved, trust_checkpoint=True)
    shutil.rmtree(moved)
    assert Recommender.load(tmp_path / "safe.pth").recommend([["42", "46"]], k=5) == before


_RECBOLE_SCORES = """
import sys
import numpy as np
import torch
from recbole.quick_start import load_data_and_model

config, model, dataset, *_ = load_data_and_model(sys.argv[1])
assert type(model).__module__.startswith("recbole.model."), type(model)
items = torch.tensor([[dataset.token2id(dataset.iid_field, i) for i in ("42", "46", "7")]])
interaction = {model.ITEM_SEQ: torch.nn.functional.pad(items, (0, model.max_seq_length - 3)),
               model.ITEM_SEQ_LEN: torch.tensor([3])}
model.eval()
with torch.no_grad():
    scores = model.full_sort_predict(interaction).view(1, -1)[:, 1: model.n_items]
np.save(sys.argv[2], scores.numpy())
print(type(model).__name__)
"""


@pytest.mark.parametrize("model", ["SASRecGenAIR", "BERT4RecTFLLMER", "GRU4RecLLMInit"])
def test_an_exported_model_is_read_by_recboles_own_loader_and_scores_the_same(tmp_path, trained, model):
    """RecBole's own loader, in a process that does not import recbole_genair itself (unpickling the config does),
    rebuilds RecBole's backbone class from the export, and it gives our scores."""
    checkpoint, recommender = trained(model)
    exported = tmp_path / "recbole.pth"
    main([f"--checkpoint={checkpoint}", f"--export_recbole={exported}"])
    script = tmp_path / "recbole_scores.py"
    script.write_text(_RECBOLE_SCORES)
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    done = subprocess.run([sys.executable, str(script), str(exported), str(tmp_path / "scores.npy")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == model.replace("GenAIR", "").replace("TFLLMER", "").replace("LLMInit", "")
    np.testing.assert_allclose(np.load(tmp_path / "scores.npy"), recommender.score([["42", "46", "7"]]), rtol=1e-5,
                               atol=1e-5)


def test_a_model_with_parts_of_its_own_is_not_exported_to_recbole(tmp_path, trained):
    _, recommender = trained("SASRecFAERec")
    with pytest.raises(CheckpointError, match=r"SASRecFAERec is more than a RecBole model with another item table"):
        recommender.export_recbole(tmp_path / "recbole.pth")
    assert not (tmp_path / "recbole.pth").exists()


def test_exclude_seen_leaves_out_the_whole_history_not_only_what_the_model_reads(trained):
    """Issue 34, planted bug: only the last MAX_ITEM_LIST_LENGTH items of a history were left out."""
    _, recommender = trained("SASRecGenAIR")
    history = [str(i) for i in range(1, 16)]  # 15 items, the model reads the last 10
    (every,) = recommender.recommend([history], k=len(recommender.item_ids) - 15, exclude_seen=True)
    assert not set(history) & set(every.items) and len(every.items) == 45
    (kept,) = recommender.recommend([history], k=len(recommender.item_ids), exclude_seen=False)
    assert set(history) <= set(kept.items)
