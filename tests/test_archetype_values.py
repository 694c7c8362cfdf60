"""The archetype vectors hold the right numbers (issue 15, items 2-4): pooling against the model's own states,
PCA against an SVD, the `.itememb` column layout, and work files repaired to their complete records."""
import json
import os

import numpy as np
import pytest
import torch

from conftest import DATASET
from recbole_genair.archetype import load_settings, run_archetype
from recbole_genair.archetype import pca
from recbole_genair.archetype.backends import load_llm, prompt_token_ids
from recbole_genair.archetype.pca import fit_pca, transform
from recbole_genair.archetype.pooling import pooled_views
from recbole_genair.archetype.store import TextLog, VectorStore
from test_archetype import dataset_without_vectors, read_jsonl, settings_for, tiny_llm_dir  # noqa: F401

HIDDEN = 32  # the tiny LLM's hidden size


def stored_vectors(work):
    """{item id: its `2 x hidden` row} of a work folder's vector store."""
    store = VectorStore(work, HIDDEN)
    matrix = store.matrix()
    return {item: np.array(matrix[row]) for item, row in store.index.items()}


# 2. pooling (GenAIR eq. 6)

def state_means(model, prompt, archetype):
    """Reference: one unpadded forward pass of prompt + archetype through the whole causal LM; the means of
    its last-layer states (after the final norm) over the prompt tokens and over the archetype tokens."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt + archetype]), output_hidden_states=True)
    states = out.hidden_states[-1][0]
    return np.stack([states[: len(prompt)].mean(0).numpy(), states[len(prompt):].mean(0).numpy()])


@pytest.mark.parametrize("view", [0, 1], ids=["prefill", "decoding"])
def test_each_view_is_the_mean_of_its_tokens_states_in_a_padded_batch(tiny_llm_dir, view):
    """View 0 averages the prompt tokens' states, view 1 the archetype tokens' (the last one included), and the
    padding of a batch of unequal lengths enters neither. Fails if padding enters a mean (right padding in view 1,
    or a left-padded pass in both), if the last archetype token is dropped, or if the boundary is off by one."""
    model, tokenizer, device = load_llm(load_settings(DATASET, config_dict={"llm_model": tiny_llm_dir}))
    eos = tokenizer.eos_token_id
    prompts = [prompt_token_ids(tokenizer, text) for text in
               ("The item name is Office item.", "Pens " * 12, "Pens")]
    archetypes = [tokenizer(text, add_special_tokens=False)["input_ids"] + [eos] for text in
                  ("Students and teachers", "Artists", "Office workers who like to write and draw")]
    lengths = [len(p) + len(a) for p, a in zip(prompts, archetypes)]
    assert len(set(lengths)) == 3 and len({len(p) for p in prompts}) == 3  # every row but one is padded
    pooled = pooled_views(model, prompts, archetypes, tokenizer.pad_token_id, device)
    for row, (prompt, archetype) in enumerate(zip(prompts, archetypes)):
        np.testing.assert_allclose(pooled[row, view], state_means(model, prompt, archetype)[view], atol=1e-5)


def test_an_item_alone_and_inside_a_left_padded_batch_gets_the_same_vectors(tmp_path, tiny_llm_dir):
    """One item per batch and eight per batch (generation left-padded, pooling padded too) give every item the
    same archetype tokens and the same two pooled vectors. Fails if padding is attended to during generation
    (e.g. an all-ones attention mask) or averaged into a view."""
    alone = dataset_without_vectors(tmp_path / "alone", "pad")
    run_archetype(settings_for(alone, tiny_llm_dir, batch_size=1, embed_batch_size=1))
    batched = dataset_without_vectors(tmp_path / "batched", "pad")
    run_archetype(settings_for(batched, tiny_llm_dir, batch_size=8, embed_batch_size=8))
    texts = read_jsonl(batched / "pad.archetype-work" / "texts.jsonl")  # in batch order
    assert any(len({t["prompt_tokens"] for t in texts[k: k + 8]}) > 1 for k in range(0, len(texts), 8))
    single = {t["id"]: t["archetype_ids"] for t in read_jsonl(alone / "pad.archetype-work" / "texts.jsonl")}
    assert {t["id"]: t["archetype_ids"] for t in texts} == single
    expected = stored_vectors(alone / "pad.archetype-work")
    vectors = stored_vectors(batched / "pad.archetype-work")
    assert vectors.keys() == expected.keys()
    for item, vector in vectors.items():
        np.testing.assert_allclose(vector, expected[item], atol=1e-5, err_msg=f"item {item}")


@pytest.mark.parametrize("max_new_tokens, prefix_cache", [(6, True), (40, True), (6, False)])
def test_states_kept_while_generating_equal_a_teacher_forced_pass(tmp_path, tiny_llm_dir, max_new_tokens, prefix_cache):
    """`states_from: generation` (one pass) and `teacher_forced` (a second pass over prompt + archetype) give the
    same texts and, within float tolerance, the same pooled vectors, in padded batches, with and without the
    cached common prompt beginning; rows cut by max_new_tokens keep their last token through the extra cached
    step, rows that end early stop at their EOS."""
    stored = {}
    for mode in ("generation", "teacher_forced"):
        folder = dataset_without_vectors(tmp_path / mode, "pad")
        run_archetype(settings_for(folder, tiny_llm_dir, states_from=mode, max_new_tokens=max_new_tokens,
                                   prefix_cache=prefix_cache if mode == "generation" else False))
        stored[mode] = (read_jsonl(folder / "pad.archetype-work" / "texts.jsonl"),
                        stored_vectors(folder / "pad.archetype-work"))
    texts, vectors = stored["generation"]
    assert texts == stored["teacher_forced"][0]
    assert any(len({t["prompt_tokens"] for t in texts[k: k + 8]}) > 1 for k in range(0, len(texts), 8))
    cut = [t for t in texts if not t["finished"]]
    assert cut and all(len(t["archetype_ids"]) == max_new_tokens for t in cut)
    for item, vector in vectors.items():
        np.testing.assert_allclose(vector, stored["teacher_forced"][1][item], atol=1e-4, err_msg=f"item {item}")


# 3. PCA (GenAIR eq. 7)

def test_a_variance_fraction_keeps_the_first_k_components_whose_cumulative_variance_reaches_it():
    """For fractions between consecutive cumulative explained-variance ratios of an SVD of the centred view, the
    fit keeps the first k that reaches the fraction: the top-k right singular subspace, with that ratio as its
    kept variance. Fails if the fit keeps k-1 or k+1 components, or fits the other view."""
    rows = (np.random.default_rng(0).normal(size=(50, 2, 6)) * [6.0, 4.0, 3.0, 2.0, 1.0, 0.5] + 10.0).astype(np.float32)
    x = rows[:, 1].astype(np.float64)
    _, singular, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    cumulative = np.cumsum(singular ** 2) / np.sum(singular ** 2)
    for k in range(1, 6):
        fraction = ((cumulative[k - 2] if k > 1 else 0.0) + cumulative[k - 1]) / 2
        mean, components, kept = fit_pca(rows, 1, fraction)
        assert components.shape[1] == k, f"fraction {fraction:.4f}"
        assert kept == pytest.approx(cumulative[k - 1], rel=1e-9)
        np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12)
        np.testing.assert_allclose(components @ components.T, vt[:k].T @ vt[:k], atol=1e-8)


def test_a_fraction_met_exactly_needs_no_further_component():
    """Variances 1, 0.5, 0.5 along the axes (exact in binary: cumulative 0.5, 0.75, 1.0): 0.75 is reached by two
    components, 0.76 needs three. Fails if the fraction must be exceeded rather than reached."""
    axes = np.array([[2, -2, 0, 0, 0, 0, 0, 0, 0],
                     [0, 0, 1, -1, 1, -1, 0, 0, 0],
                     [0, 0, 1, 1, -1, -1, 0, 0, 0]], dtype=np.float32).T  # centred, orthogonal, n - 1 = 8
    rows = np.stack([axes, axes], axis=1)
    assert [fit_pca(rows, 0, f)[1].shape[1] for f in (0.5, 0.75, 0.76)] == [1, 2, 3]
    assert [fit_pca(rows, 0, f)[2] for f in (0.5, 0.75, 0.76)] == [0.5, 0.75, 1.0]


def raw_rows(tmp_path, n, d, seed=1):
    """`n x 2 x d` float32 rows (unequal variances, non-zero mean), memory-mapped from a file as the pipeline does."""
    data = (np.random.default_rng(seed).normal(size=(n, 2, d)) * np.arange(d, 0, -1) + 7.0).astype(np.float32)
    data.tofile(tmp_path / "raw.f32")
    return data, np.memmap(tmp_path / "raw.f32", dtype=np.float32, mode="r", shape=(n, 2, d))


def test_chunked_fit_equals_the_unchunked_covariance_eigendecomposition(tmp_path):
    """Over 2 chunks and a 1-row third, the fit's mean, components and kept variance equal those of the whole
    view at once. Fails if a chunk boundary is off by one (a row skipped or counted twice)."""
    n = 2 * pca.CHUNK + 1
    data, rows = raw_rows(tmp_path, n, 5)
    x = data[:, 1].astype(np.float64)
    centred = x - x.mean(0)
    eigval, eigvec = np.linalg.eigh(centred.T @ centred / (n - 1))
    eigval, top = eigval[::-1], eigvec[:, ::-1][:, :3]
    mean, components, kept = fit_pca(rows, 1, 3)
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(components @ components.T, top @ top.T, atol=1e-9)
    assert kept == pytest.approx(eigval[:3].sum() / eigval.sum(), rel=1e-12)


def test_chunked_projection_equals_the_unchunked_projection(tmp_path):
    """The projection, chunk by chunk over 2 chunks and a 1-row third, is `(x - mean) @ components` of every row in
    row order. Fails if a chunk boundary is off by one."""
    n = 2 * pca.CHUNK + 1
    data, rows = raw_rows(tmp_path, n, 5)
    mean, components, _ = fit_pca(rows, 0, 3)
    projected = np.concatenate(list(transform(rows, 0, mean, components)))
    np.testing.assert_allclose(projected, (data[:, 0].astype(np.float64) - mean) @ components, rtol=1e-12, atol=1e-12)


def read_itememb(path):
    with open(path, encoding="utf-8") as f:
        f.readline()
        rows = [line.rstrip("\n").split("\t") for line in f]
    return [r[0] for r in rows], np.array([[float(v) for v in r[1].split()] for r in rows])


def test_itememb_columns_are_the_prefill_projection_then_the_decoding_projection(tmp_path, tiny_llm_dir):
    """With the default fraction (0.95) the views keep different numbers of components; each `.itememb` row is
    [prefill projection | decoding projection] of that item's own stored vectors, under the per-view fits of the
    raw rows (the fits themselves are checked against an SVD above). Fails if the views' column order is
    swapped, or a row gets another item's vectors."""
    folder = dataset_without_vectors(tmp_path, "cols")
    summary = run_archetype(settings_for(folder, tiny_llm_dir, pca_components=0.95))
    raw = np.memmap(summary["raw_vectors"], dtype=np.float32, mode="r").reshape(-1, 2, HIDDEN)
    fits = [fit_pca(raw, view, 0.95) for view in (0, 1)]
    widths = [components.shape[1] for _, components, _ in fits]
    assert widths[0] != widths[1]  # a swap also moves the boundary between the views
    meta = json.loads((folder / "cols.itememb.json").read_text())
    assert (meta["order"], meta["views"]) == (["prefill", "decoding"], dict(zip(("prefill", "decoding"), widths)))
    ids, values = read_itememb(folder / "cols.itememb")
    vectors = stored_vectors(folder / "cols.archetype-work")
    own = np.stack([vectors[item] for item in ids]).astype(np.float64)
    expected = np.hstack([(own[:, view] - mean) @ components for view, (mean, components, _) in enumerate(fits)])
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-7)  # written with 6 significant digits


# 4. work files repaired on reopen

def record(item, archetype="Students and teachers"):
    return {"id": item, "prompt": f"prompt of {item}", "archetype": archetype, "archetype_ids": [7, 8, 2]}


def test_a_truncated_text_line_is_dropped_on_reopen_and_appending_continues(tmp_path):
    """A run killed while writing a record (here inside a two-byte UTF-8 character) leaves a partial last line:
    reopening keeps the complete records, and the next record gets a line of its own. Fails if the partial line
    is kept (or merely skipped on reading, so the next record is glued to it)."""
    path = tmp_path / "texts.jsonl"
    TextLog(path).append([record("1"), record("2")])
    line = (json.dumps(record("3", "Café owners"), ensure_ascii=False) + "\n").encode("utf-8")
    with open(path, "ab") as f:
        f.write(line[: line.index("é".encode("utf-8")) + 1])
    reopened = TextLog(path)
    assert reopened.records == {"1": record("1"), "2": record("2")}
    reopened.append([record("4", "Café owners")])
    assert TextLog(path).records == {"1": record("1"), "2": record("2"), "4": record("4", "Café owners")}
    assert read_jsonl(path) == [record("1"), record("2"), record("4", "Café owners")]


H = 3  # hidden size of the hand-made stores
ROW_BYTES = 2 * H * 4


def rows_for(*seeds):
    """Distinct `2 x H` float32 rows, one per seed."""
    return np.array([[[s + v / 10 + j / 100 for j in range(H)] for v in range(2)] for s in seeds], dtype=np.float32)


def half_row(work):  # killed while writing the rows of a batch
    with open(work / "vectors.f32", "ab") as f:
        f.write(rows_for(99).tobytes()[: ROW_BYTES // 2])


def more_ids_than_rows(work):  # the last row never reached the disk (e.g. a copy of the folder taken mid-run)
    os.truncate(work / "vectors.f32", 2 * ROW_BYTES)


def more_rows_than_ids(work):  # killed between writing a batch's rows and its ids
    (work / "vectors.ids").write_text("item-1\nitem-2\n")


def half_id_line(work):  # killed while writing the ids: "item-1" is the start of "item-10", a valid-looking id
    (work / "vectors.ids").write_text("item-1\nitem-2\nitem-1")


@pytest.mark.parametrize("damage, kept", [
    (half_row, 3), (more_ids_than_rows, 2), (more_rows_than_ids, 2), (half_id_line, 2),
])
def test_a_damaged_vector_store_is_cut_to_its_complete_pairs_and_appending_continues(tmp_path, damage, kept):
    """Reopening keeps the complete (id, row) pairs in order and cuts both files to them, so the next append gets
    the next row. Fails if a half row is kept, if the ids are not trimmed to the rows or the rows to the ids, or
    if a half id line is read as an id."""
    ids, seeds = ["item-1", "item-2", "item-10"], [1, 2, 10]
    VectorStore(tmp_path, H).append(ids, rows_for(*seeds))
    damage(tmp_path)
    reopened = VectorStore(tmp_path, H)
    assert reopened.ids == ids[:kept]
    np.testing.assert_array_equal(reopened.matrix(), rows_for(*seeds[:kept]))
    reopened.append(["item-20"], rows_for(20))
    again = VectorStore(tmp_path, H)
    assert again.ids == ids[:kept] + ["item-20"]
    assert again.index == {item: row for row, item in enumerate(ids[:kept] + ["item-20"])}
    np.testing.assert_array_equal(again.matrix(), rows_for(*seeds[:kept], 20))


def test_an_id_with_a_unicode_line_boundary_keeps_its_row_on_reopen(tmp_path):
    """Ids are written one per "\\n"-ended line, so only "\\n" may end one on reading: "a\\x85b" (U+0085, which a
    UTF-8 .inter token may hold) stays one id with its own row. Fails if reopening splits it into "a" and "b",
    which then take its row and the next one, while "c" is dropped."""
    VectorStore(tmp_path, H).append(["a\x85b", "c"], rows_for(1, 2))
    reopened = VectorStore(tmp_path, H)
    assert reopened.ids == ["a\x85b", "c"]
    np.testing.assert_array_equal(reopened.matrix(), rows_for(1, 2))


def test_a_run_resumed_from_damaged_work_files_redoes_only_the_lost_items(tmp_path, tiny_llm_dir):
    """Work files cut as kills leave them (20 texts and half a line; 16 rows and half a row; 16 ids and half a line)
    resume to the uninterrupted run's texts and vectors: 40 texts generated again, and the 4 items that have a text
    but no vector embedded without generating them. Fails if the store keeps a half row or rows beyond its ids,
    the text log keeps a half line, or a resumed run generates texts it has."""
    folder = dataset_without_vectors(tmp_path, "hurt")
    settings = settings_for(folder, tiny_llm_dir)
    run_archetype(settings)
    work = folder / "hurt.archetype-work"
    texts_before, vectors_before = read_jsonl(work / "texts.jsonl"), stored_vectors(work)
    ids_before = VectorStore(work, HIDDEN).ids
    lines = (work / "texts.jsonl").read_bytes().splitlines(keepends=True)
    (work / "texts.jsonl").write_bytes(b"".join(lines[:20]) + lines[20][:30])
    id_lines = (work / "vectors.ids").read_bytes().splitlines(keepends=True)
    (work / "vectors.ids").write_bytes(b"".join(id_lines[:16]) + id_lines[16][:1])
    os.truncate(work / "vectors.f32", 16 * 2 * HIDDEN * 4 + HIDDEN * 4)
    summary = run_archetype(settings)
    assert summary["generated"] == len(texts_before) - 20
    assert read_jsonl(work / "texts.jsonl") == texts_before
    assert VectorStore(work, HIDDEN).ids == ids_before
    vectors = stored_vectors(work)
    for item in ids_before:
        np.testing.assert_allclose(vectors[item], vectors_before[item], atol=1e-5, err_msg=f"item {item}")


def test_the_decoding_view_pools_only_the_kept_steps_of_rows_that_stopped_early():
    """Issue 34, planted bug: the decoding view pooled over every generated step of the batch instead of the
    steps a row kept (a row that reached its EOS early has fewer)."""
    from types import SimpleNamespace

    from recbole_genair.archetype.pooling import GenerationStates

    generator = torch.Generator().manual_seed(0)
    prefill = torch.randn(2, 3, 4, generator=generator)  # two prompts of 3 tokens
    steps = [torch.randn(2, 1, 4, generator=generator) for _ in range(4)]  # 4 more steps: 5 generated tokens
    recorder = GenerationStates(model=None)
    recorder.steps = [prefill, *steps]
    out = SimpleNamespace(sequences=torch.zeros(2, 3 + 5, dtype=torch.long))
    pooled = recorder.pooled(out, torch.ones(2, 3, dtype=torch.long), kept_lengths=[2, 4])
    fed = torch.cat(steps, dim=1)  # batch x 4 x hidden
    np.testing.assert_allclose(pooled[0, 1], fed[0, :2].mean(0).numpy(), rtol=1e-6)  # stopped after 2 tokens
    np.testing.assert_allclose(pooled[1, 1], fed[1, :4].mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(pooled[:, 0], prefill.mean(1).numpy(), rtol=1e-6)
