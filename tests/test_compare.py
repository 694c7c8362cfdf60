"""Group metrics, matrix entropy, significance marking and the one-command comparison."""
import csv
import json
import math
import shutil
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.image import imread
from recbole.evaluator.collector import DataStruct
from recbole.utils import init_seed
from scipy import stats

from conftest import copy_dataset, per_user_ndcg, raw_training_sequences, tiny_config, working_in
from recbole_genair.config import Config
from recbole_genair.data import create_dataset
from recbole_genair.commands.compare import run_comparison
from recbole_genair.commands.train import main
from recbole_genair.evaluation.compare import (ablation_report, markdown_table, paired_significance, parse_seeds, reference_for,
                                               summarise)
from recbole_genair.evaluation.entropy import matrix_entropy
from recbole_genair.evaluation.group_metrics import GROUP_METRICS, TARGET_ITEMS, TRAIN_POPULARITY, item_groups
from recbole_genair.model.all_positions import TrainModeError
from recbole_genair.quick_start import build_model, load_data_and_model, prepare_data, run_recbole_genair
from recbole_genair.trainer import LLMRecTrainer


def test_item_groups_head_tail_cold():
    popularity = np.array([0, 50, 40, 3, 2, 1, 0, 0, 9, 8, 7])  # 10 real items: head = top 2
    assert item_groups(popularity, 0.2).tolist() == [-1, 0, 0, 1, 1, 1, 2, 2, 1, 1, 1]


def test_group_metrics_match_direct_computation(tmp_path):
    config = Config("SASRec", config_dict=tiny_config(tmp_path, metrics=list(GROUP_METRICS), topk=[2], valid_metric="HeadNDCG@2"))
    popularity = np.array([0, 50, 40, 3, 2, 1, 0, 0, 9, 8, 7])
    targets = torch.tensor([1, 3, 6, 2, 5, 7])  # head, tail, cold, head, tail, cold
    hit_rank = [1, 2, 0, 0, 1, 2]  # 1-based rank of the target in the top-2, 0 = missed
    topk = torch.zeros(6, 3, dtype=torch.long)
    for row, rank in enumerate(hit_rank):
        if rank:
            topk[row, rank - 1] = 1
        topk[row, 2] = 1  # one positive per user
    data = DataStruct()
    data.set("rec.topk", topk)
    data.set(TARGET_ITEMS, targets)
    data.set(TRAIN_POPULARITY, torch.from_numpy(popularity))
    ndcg = lambda r: 0.0 if r == 0 else 1.0 / math.log2(r + 1)  # noqa: E731
    expected = {
        "head": ([1, 0], [ndcg(1), 0.0]), "tail": ([1, 1], [ndcg(2), ndcg(1)]), "cold": ([0, 1], [0.0, ndcg(2)]),
    }
    for group, (hits, gains) in expected.items():
        hit = GROUP_METRICS[f"{group.title()}Hit"](config).calculate_metric(data)
        gain = GROUP_METRICS[f"{group.title()}NDCG"](config).calculate_metric(data)
        assert hit[f"{group}hit@2"] == pytest.approx(np.mean(hits), abs=1e-4)
        assert gain[f"{group}ndcg@2"] == pytest.approx(np.mean(gains), abs=1e-4)


def dataset_with_cold_targets(tmp_path):
    """The tiny dataset plus users 901-903, whose test items 97-99 occur nowhere else (cold items)."""
    folder = copy_dataset(tmp_path, "groups")
    with open(folder / "groups.inter", "a", encoding="utf-8") as f:
        for user, cold in ((901, 97), (902, 98), (903, 99)):
            for k, item in enumerate([user % 7 + 1, user % 7 + 2, user % 7 + 3, cold]):
                f.write(f"{user}\t{item}\t5\t{990000000 + k}\n")
    return folder / "groups.inter"


def raw_item_groups(inter_path, dataset, head_ratio=0.2):
    """Internal item id -> head / tail / cold, from training interactions counted in the raw file.

    Training = each user's items in time order minus the last two (validation, test). Head: the
    ceil(20%) items with the most training interactions, ties to the smaller internal id.
    """
    inter = pd.read_csv(inter_path, sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    inter = inter.sort_values(["user_id", "timestamp"], kind="stable")
    counts = Counter()
    for _, g in inter.groupby("user_id"):
        counts.update(dataset.token2id(dataset.iid_field, list(g["item_id"].astype(str))[:-2]))
    items = range(1, dataset.item_num)
    ranked = sorted(items, key=lambda i: (-counts[i], i))
    head = set(ranked[: math.ceil(head_ratio * len(ranked))])
    return {i: "cold" if counts[i] == 0 else "head" if i in head else "tail" for i in items}


@pytest.mark.parametrize("mode", ["full", "uni100"])
def test_group_ndcg_is_per_user_ndcg_grouped_by_training_popularity(tmp_path, mode):
    """Head/Tail/ColdNDCG@10 = mean NDCG@10 (recomputed from the model's scores) of the users whose target
    is in the group, groups from the training interactions of the raw file.

    Fails if the trainer counts popularity on all interactions instead of the training split.
    """
    inter_path = dataset_with_cold_targets(tmp_path)
    config = Config("SASRec", config_dict=tiny_config(
        tmp_path, data_path=str(tmp_path / "data"), dataset="groups", epochs=2, topk=[10],
        metrics=["NDCG", "HeadNDCG", "TailNDCG", "ColdNDCG"],
        eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "mode": mode}))
    dataset = create_dataset(config)
    train_data, _, test_data = prepare_data(config, dataset)
    model = build_model(config, train_data)
    trainer = LLMRecTrainer(config, model)
    trainer.fit(train_data, saved=False)
    init_seed(config["seed"], True)  # uni100: the same negatives for the reference and the trainer
    batches = list(test_data)
    init_seed(config["seed"], True)
    reported = trainer.evaluate(test_data, load_best_model=False)
    users = per_user_ndcg(model, batches)
    assert reported["ndcg@10"] == pytest.approx(np.mean([n for _, n in users]), abs=1e-4)  # same candidates
    group_of = raw_item_groups(inter_path, dataset)
    for group in ("head", "tail", "cold"):
        values = [n for target, n in users if group_of[target] == group]
        assert len(values) >= 3
        assert reported[f"{group}ndcg@10"] == pytest.approx(np.mean(values), abs=1e-4), group


def test_a_group_metric_can_be_the_valid_metric(tmp_path):
    """Fails if early stopping reads another metric than `valid_metric: TailNDCG@10`."""
    config = tiny_config(tmp_path, metrics=["NDCG", "TailNDCG"], valid_metric="TailNDCG@10", epochs=2)
    result = run_recbole_genair("SASRec", config_dict=config, saved=False)
    assert result["best_valid_score"] == result["best_valid_result"]["tailndcg@10"]
    assert result["best_valid_score"] != result["best_valid_result"]["ndcg@10"]


def test_matrix_entropy_equals_eigenvalue_computation():
    z = torch.randn(30, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eig = torch.linalg.eigvalsh(z @ z.T).clamp_min(0)
    p = eig / eig.sum()
    p = p[p > 1e-12]
    assert matrix_entropy(z) == pytest.approx(float(-(p * p.log()).sum()), rel=1e-9)


def test_matrix_entropy_is_maximal_for_an_isotropic_matrix():
    isotropic = torch.eye(8)
    assert matrix_entropy(isotropic) == pytest.approx(math.log(8))
    skewed = torch.diag(torch.tensor([5.0, 1, 1, 1, 1, 1, 1, 1]))
    random = torch.randn(8, 8, generator=torch.Generator().manual_seed(1))
    assert matrix_entropy(skewed) < math.log(8) and matrix_entropy(random) < math.log(8)


def fake_runs(models, seeds, values):
    return {(m, s): {"test": {"ndcg@10": values[m][i]}, "trainable_params": 10, "flops_per_user": 1e6,
                     "entropy_by_quintile": [1.0] * 5}
            for m in models for i, s in enumerate(seeds)}


def test_significance_marker_only_when_the_paired_test_says_so():
    seeds = [1, 2, 3, 4]
    models = ["Base", "Better", "Noisy"]
    values = {"Base": [0.10, 0.11, 0.12, 0.13], "Better": [0.15, 0.161, 0.169, 0.18],
              "Noisy": [0.05, 0.20, 0.08, 0.17]}
    assert paired_significance(values["Better"], values["Base"])[1]
    assert not paired_significance(values["Noisy"], values["Base"])[1]
    summary = summarise(fake_runs(models, seeds, values), models, seeds, metrics=["ndcg@10"])
    table = markdown_table(summary, models, "full", len(seeds), metrics=["ndcg@10"])
    better = next(line for line in table.splitlines() if line.startswith("| Better"))
    noisy = next(line for line in table.splitlines() if line.startswith("| Noisy"))
    assert "*)" in better and "*" not in noisy.split("|")[2]
    assert "full ranking" in table


def two_sided_paired_p(values, reference):
    """Reference: t = mean(d) / (sd(d) / sqrt(n)) of the per-seed differences d, p = 2 P(T_{n-1} > |t|)."""
    d = np.subtract(values, reference)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    return float(2 * stats.t.sf(abs(t), len(d) - 1))


def test_paired_test_finds_a_consistent_gain_that_an_unpaired_test_misses():
    """Seeds differ by 0.1, the gain on each seed is about 0.01.

    Fails if paired_significance runs an unpaired (independent samples) t-test.
    """
    reference = [0.10, 0.20, 0.30, 0.40]
    values = [0.11, 0.215, 0.308, 0.412]
    assert stats.ttest_ind(values, reference).pvalue > 0.5  # unpaired: nothing to see
    p, significant = paired_significance(values, reference)
    assert p == pytest.approx(two_sided_paired_p(values, reference), rel=1e-9) and p < 0.01 and significant


def test_one_sided_evidence_is_not_significant():
    """t = 2.41 on 4 degrees of freedom: one-sided p = 0.037, two-sided p = 0.073.

    Fails if paired_significance computes a one-sided p-value.
    """
    reference = [0.20, 0.22, 0.18, 0.25, 0.21]
    values = list(np.add(reference, [0.01, 0.02, 0.0, 0.03, 0.005]))
    assert stats.ttest_rel(values, reference, alternative="greater").pvalue < 0.05
    p, significant = paired_significance(values, reference)
    assert p == pytest.approx(two_sided_paired_p(values, reference), rel=1e-9) and p > 0.05 and not significant


def test_a_consistent_loss_is_significant_too():
    """Fails if paired_significance tests for a gain only (one-sided, alternative='greater')."""
    reference = [0.20, 0.30, 0.25, 0.22]
    values = list(np.subtract(reference, [0.010, 0.012, 0.009, 0.011]))
    p, significant = paired_significance(values, reference)
    assert p == pytest.approx(two_sided_paired_p(values, reference), rel=1e-9) and significant


def test_summary_pairs_each_run_with_the_reference_run_of_its_seed():
    """The model misses seed 3: its seeds 1, 2, 4 are paired with the reference's 1, 2, 4.

    Fails if summarise pairs the model's runs with the reference's first runs by position.
    """
    seeds = [1, 2, 3, 4]
    values = {"Base": [0.10, 0.30, 0.12, 0.20], "Model": [0.11, 0.32, 0.21]}
    runs = fake_runs(["Base"], seeds, values)
    runs.update({("Model", s): {**runs[("Base", s)], "test": {"ndcg@10": v}}
                 for s, v in zip([1, 2, 4], values["Model"])})
    row = summarise(runs, ["Base", "Model"], seeds, metrics=["ndcg@10"])["Model"]["ndcg@10"]
    assert row["p_value"] == pytest.approx(two_sided_paired_p(values["Model"], [0.10, 0.30, 0.20]), rel=1e-9)
    assert row["rel_change"] == pytest.approx(np.mean(values["Model"]) / np.mean([0.10, 0.30, 0.20]) - 1)


def test_each_llm_model_is_held_against_its_own_backbone():
    models = ["SASRec", "SASRecGenAIR", "GRU4Rec", "GRU4RecGenAIR", "SASRecTFLLMER"]
    assert [reference_for(m, models) for m in models] == ["SASRec", "SASRec", "GRU4Rec", "GRU4Rec", "SASRec"]
    assert reference_for("BERT4RecGenAIR", ["SASRec", "BERT4RecGenAIR"]) == "SASRec"  # backbone absent: first
    seeds = [1, 2, 3]
    values = {"SASRec": [0.10, 0.11, 0.12], "SASRecGenAIR": [0.12, 0.13, 0.15], "GRU4Rec": [0.20, 0.21, 0.22],
              "GRU4RecGenAIR": [0.10, 0.105, 0.11], "SASRecTFLLMER": [0.11, 0.11, 0.11]}
    summary = summarise(fake_runs(models, seeds, values), models, seeds, metrics=["ndcg@10"])
    assert summary["GRU4RecGenAIR"]["ndcg@10"]["rel_change"] == pytest.approx(0.105 / 0.21 - 1)
    assert summary["SASRecGenAIR"]["ndcg@10"]["rel_change"] == pytest.approx(0.40 / 0.33 - 1)
    assert math.isnan(summary["GRU4Rec"]["ndcg@10"]["rel_change"])  # a RecBole model is a reference itself
    table = markdown_table(summary, models, "full", 3, metrics=["ndcg@10"])
    assert "RecBole backbone (SASRec, GRU4Rec)" in table and "(-50.0%" in table


def test_a_model_with_fewer_seeds_says_so_and_has_no_std():
    models, seeds = ["SASRec", "SASRecGenAIR"], [1, 2, 3]
    runs = fake_runs(models, seeds, {"SASRec": [0.10, 0.11, 0.12], "SASRecGenAIR": [0.12, 0.13, 0.15]})
    del runs[("SASRecGenAIR", 2)], runs[("SASRecGenAIR", 3)]
    summary = summarise(runs, models, seeds, metrics=["ndcg@10"])
    assert math.isnan(summary["SASRecGenAIR"]["ndcg@10"]["std"])
    assert summary["SASRec"]["ndcg@10"]["std"] == pytest.approx(0.01)
    table = markdown_table(summary, models, "full", 3, metrics=["ndcg@10"])
    row = next(line for line in table.splitlines() if line.startswith("| SASRecGenAIR"))
    assert "(1 of 3 seeds)" in row and "0.1200 ± n/a" in row
    # Δ against the reference on the same seed (0.10), not against its 3-seed mean (0.11)
    assert summary["SASRecGenAIR"]["ndcg@10"]["rel_change"] == pytest.approx(0.12 / 0.10 - 1)
    assert "(+20.0%)" in row
    assert "| SASRec | 0.1100 ± 0.0100 |" in table


def test_a_comparison_split_by_seed_reports_every_seed_finished(tmp_path):
    """Issue 34: processes given one seed each wrote a table of their own seed; the last now reports all."""
    from recbole_genair.evaluation.run_records import finished_seeds

    runs = tmp_path / "runs"
    runs.mkdir()
    for name in ("SASRec-seed2020", "SASRecGenAIR-seed2020", "SASRec-seed2021", "SASRecGenAIR-seed2021",
                 "SASRec-seed2022", "GRU4Rec-seed2023", "SASRec-seed2022.lock"):  # 2022: one model only
        (runs / f"{name}.json").write_text("{}")
    assert finished_seeds(tmp_path, ["SASRec", "SASRecGenAIR"], [2021]) == [2020, 2021]
    assert finished_seeds(tmp_path, ["SASRec"], [2024]) == [2020, 2021, 2022, 2024]


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """SASRec and SASRecGenAIR over seeds 2020 and 2021 on the tiny dataset, with a uni100 table; run once."""
    out = tmp_path_factory.mktemp("comparison")
    with working_in(out):
        report = run_comparison(["SASRec", "SASRecGenAIR"], "genair-test", "2", out / "cmp",
                                config_dict=tiny_config(out), extra_test_modes=["uni100"])
    return out / "cmp", report


def run_record(out, model, seed):
    return json.loads((out / "runs" / f"{model}-seed{seed}.json").read_text())


def test_compare_report_files_hold_the_runs_values(comparison):
    """Fails if results.csv fills its uni100 columns from the full-ranking results."""
    out, report = comparison
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "SASRec-seed2020.json", "SASRec-seed2021.json", "SASRecGenAIR-seed2020.json", "SASRecGenAIR-seed2021.json"]
    records = {(m, s): run_record(out, m, s) for m in ("SASRec", "SASRecGenAIR") for s in (2020, 2021)}
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], int(r["seed"])) for r in rows] == list(records)
    for row, record in zip(rows, records.values()):
        assert float(row["test_ndcg@10"]) == record["test"]["ndcg@10"]
        assert float(row["test_uni100_ndcg@10"]) == record["extra_test"]["uni100"]["ndcg@10"]
        assert float(row["test_tailndcg@10"]) == record["test"]["tailndcg@10"]
    summary = json.loads((out / "summary.json").read_text())["models"]["SASRecGenAIR"]
    values = [records[("SASRecGenAIR", s)]["test"]["ndcg@10"] for s in (2020, 2021)]
    assert summary["ndcg@10"]["mean"] == pytest.approx(np.mean(values))
    assert summary["ndcg@10"]["std"] == pytest.approx(np.std(values, ddof=1))
    cell = f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"
    assert (out / "table.md").read_text() == report["table"] + "\n" and f"| SASRecGenAIR | {cell} (" in report["table"]
    uni = [records[("SASRecGenAIR", s)]["extra_test"]["uni100"]["ndcg@10"] for s in (2020, 2021)]
    uni_table = (out / "table_uni100.md").read_text()
    assert uni_table == report["extra_tables"]["uni100"] + "\n" and "sampled negatives (uni100)" in uni_table
    assert f"| SASRecGenAIR | {np.mean(uni):.4f} ± {np.std(uni, ddof=1):.4f} (" in uni_table
    # figure sizes at 120 dpi: 3 user groups with targets (the tiny dataset has no cold target), 2 scatter panels
    for name, (width, height) in {"ndcg_by_group.png": (840, 480), "entropy_by_quintile.png": (720, 480),
                                  "head_tail_scatter.png": (864, 432)}.items():
        assert imread(out / name).shape[:2] == (height, width), name


def test_run_records_hold_params_flops_and_entropy_of_the_trained_model(comparison):
    """Fails if GenAIR's evaluation projects the item table per batch instead of once (FLOPs), or if the
    entropy quintiles start from the least popular items.
    """
    out, _ = comparison
    sasrec, genair = run_record(out, "SASRec", 2020), run_record(out, "SASRecGenAIR", 2020)
    # GenAIR = SASRec - its 61 x 16 ID table + projector Linear(24, 32), LayerNorm(32), Linear(32, 16)
    # + the per-item residual rows of SASRecGenAIR's default (60 x 16, none for padding)
    assert genair["trainable_params"] == (sasrec["trainable_params"] - 61 * 16 + (24 * 32 + 32) + 2 * 32 + (32 * 16 + 16)
                                          + 60 * 16)
    # per user, one layer, L = 10, h = 16, inner = 32, 61 items: Q, K, V, O; scores and weighted sum;
    # feed-forward; scoring. GenAIR's projected table is cached for the evaluation: no cost per user.
    flops = 4 * 2 * 10 * 16 * 16 + 2 * 2 * 10 * 10 * 16 + 2 * 2 * 10 * 16 * 32 + 2 * 16 * 61
    assert sasrec["flops_per_user"] == genair["flops_per_user"] == flops
    _, model, dataset, _, _, _ = load_data_and_model(genair["checkpoint"])
    model.eval()
    with torch.no_grad():
        table = model.item_embedding.weight[: dataset.item_num].double()
    counts = Counter(dataset.token2id(dataset.iid_field, t) for seq in raw_training_sequences().values() for t in seq)
    order = sorted(range(1, dataset.item_num), key=lambda i: (-counts[i], i))
    expected = []
    for group in np.array_split(np.array(order), 5):
        eig = torch.linalg.eigvalsh(table[group] @ table[group].T).clamp_min(0)
        p = eig / eig.sum()
        p = p[p > 1e-12]
        expected.append(float(-(p * p.log()).sum()))
    assert genair["entropy_by_quintile"] == pytest.approx(expected, rel=1e-5)


def test_a_second_comparison_skips_finished_runs(tmp_path, comparison):
    """Fails if finished runs are trained again or --report_only trains a model without runs."""
    out = tmp_path / "cmp"
    shutil.copytree(comparison[0], out)
    report = comparison[1]
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    again = run_comparison(["SASRec", "SASRecGenAIR"], "genair-test", "2", out, config_dict=tiny_config(tmp_path),
                           extra_test_modes=["uni100"])
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == stamps  # nothing retrained
    assert again["table"] == report["table"]
    (out / "table.md").unlink()
    only = main(["--compare", "--report_only", "--models=SASRec,SASRecGenAIR,GRU4Rec", "--seeds=2020,2021,",
                 f"--output={out}", "--extra_test_modes=uni100"])  # GRU4Rec has no runs: left out, not trained
    assert (out / "table.md").read_text() == only["table"] + "\n" and "| GRU4Rec (0 of 2 seeds) | n/a" in only["table"]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == stamps


def test_ablation_report_puts_one_models_runs_from_several_folders_in_one_table(tmp_path):
    seeds = [2020, 2021, 2022]
    values = {"full": [0.10, 0.11, 0.12], "prefill": [0.05, 0.06, 0.0605], "alpha0": [0.10, 0.11, 0.12]}
    for label, ndcgs in values.items():
        (tmp_path / label / "runs").mkdir(parents=True)
        for seed, ndcg in zip(seeds, ndcgs):
            run = {"model": "SASRecGenAIR", "seed": seed, "test": {"ndcg@10": ndcg}, "eval_mode": "full",
                   "extra_test": {"uni100": {"ndcg@10": 3 * ndcg}}, "trainable_params": 5,
                   "flops_per_user": 1e6, "entropy_by_quintile": [1.0] * 5}
            (tmp_path / label / "runs" / f"SASRecGenAIR-seed{seed}.json").write_text(json.dumps(run))
    tables = ablation_report({k: tmp_path / k for k in values}, "SASRecGenAIR", seeds, tmp_path / "out", ["uni100"])
    main = tables["main"].splitlines()
    assert "| SASRecGenAIR |" in main[2] and "against full" in main[0]
    prefill = next(line for line in main if line.startswith("| prefill"))
    alpha0 = next(line for line in main if line.startswith("| alpha0"))
    assert "0.0568" in prefill and "(-48.3%*)" in prefill and "(+0.0%)" in alpha0
    assert "| full | 0.3300 ±" in tables["uni100"] and (tmp_path / "out" / "ablation_uni100.md").exists()
    # folder:Model takes another model's runs for a row, e.g. the backbone as the reference
    backbone = {"model": "SASRec", "test": {"ndcg@10": 0.05}, "eval_mode": "full", "trainable_params": 9,
                "flops_per_user": 1e6, "entropy_by_quintile": [1.0] * 5}
    for seed in seeds:
        (tmp_path / "full" / "runs" / f"SASRec-seed{seed}.json").write_text(json.dumps({**backbone, "seed": seed}))
    tables = ablation_report({"SASRec": f"{tmp_path / 'full'}:SASRec", "full": tmp_path / "full"}, "SASRecGenAIR",
                             seeds, tmp_path / "out2")
    rows = tables["main"].splitlines()
    assert any(r.startswith("| SASRec | 0.0500 ± 0.0000 |") and "| 9 |" in r for r in rows)
    assert any(r.startswith("| full | 0.1100 ± 0.0100 (+120.0%*)") and "| 5 |" in r for r in rows)


def test_seeds_are_a_count_or_a_comma_list_and_a_seed_is_never_taken_for_a_count():
    assert parse_seeds(3) == parse_seeds("3") == [2020, 2021, 2022]
    assert parse_seeds("1,5,9") == [1, 5, 9]
    assert parse_seeds("2022,") == [2022]
    with pytest.raises(ValueError, match=r"--seeds=2022, runs seed 2022 alone"):
        parse_seeds("2022")
    with pytest.raises(ValueError, match="asks for 0 seeds"):
        parse_seeds(0)


def test_run_records_and_table_say_how_training_ended(tmp_path):
    """Fails if a run capped by `epochs` is reported as early-stopped or the tested epoch is not the saved one."""
    settings = tiny_config(tmp_path, epochs=30, stopping_step=1, learning_rate=0.01, train_mode="prefix")
    with working_in(tmp_path):
        report = run_comparison(["SASRec"], "genair-test", "2020,", tmp_path / "cmp", config_dict=settings)
        capped = run_comparison(["SASRec"], "genair-test", "2020,", tmp_path / "capped",
                                config_dict={**settings, "epochs": 2})
    training = run_record(tmp_path / "cmp", "SASRec", 2020)["training"]
    assert training["stopped_early"] and training["train_mode"] == "prefix" and training["train_batch_size"] == 64
    # RecBole stops after stopping_step + 1 validations without improvement
    assert training["epochs"] == training["best_epoch"] + 1 + 2 < 30
    checkpoint = torch.load(run_record(tmp_path / "cmp", "SASRec", 2020)["checkpoint"], weights_only=False)
    assert checkpoint["epoch"] == training["best_epoch"]
    row = f"| SASRec | prefix | 64 | {training['epochs']} | {training['best_epoch'] + 1} | 1/1 |"
    assert row in report["table"] and row in (tmp_path / "cmp" / "table.md").read_text()
    ended = run_record(tmp_path / "capped", "SASRec", 2020)["training"]
    assert ended["epochs"] == 2 and not ended["stopped_early"] and "| SASRec | prefix | 64 | 2 |" in capped["table"]
    assert "| 0/1 |" in capped["table"]


def test_a_model_that_cannot_train_as_asked_is_refused_before_any_model_trains(tmp_path):
    """Issue 34: NARMGenAIR with train_mode all_positions was refused only after SASRec had trained."""
    with pytest.raises(TrainModeError, match="NARMGenAIR supports train_mode: prefix only"):
        run_comparison(["SASRec", "NARMGenAIR"], "genair-test", "1", tmp_path / "cmp",
                       config_dict=tiny_config(tmp_path, train_mode="all_positions"))
    assert not list((tmp_path / "cmp").rglob("*.json")) and not (tmp_path / "saved").exists()


def test_the_relative_change_uses_only_the_seeds_both_models_have():
    """Issue 34, planted bug: Δ over all of a model's seeds instead of those it shares with its reference."""
    runs = fake_runs(["SASRec"], [1, 2], {"SASRec": [0.10, 0.12]})
    runs.update(fake_runs(["SASRecGenAIR"], [1, 2, 3], {"SASRecGenAIR": [0.10, 0.12, 0.50]}))
    summary = summarise(runs, ["SASRec", "SASRecGenAIR"], [1, 2, 3], metrics=["ndcg@10"])
    assert summary["SASRecGenAIR"]["ndcg@10"]["rel_change"] == pytest.approx(0.0, abs=1e-12)
    assert summary["SASRecGenAIR"]["ndcg@10"]["mean"] == pytest.approx(0.24)  # the mean keeps every seed


def test_entropy_by_quintile_is_averaged_over_seeds_per_quintile():
    """Issue 34, planted bug: the mean taken over the wrong axis (per seed instead of per quintile)."""
    runs = fake_runs(["SASRec"], [1, 2], {"SASRec": [0.1, 0.1]})
    runs[("SASRec", 1)]["entropy_by_quintile"] = [1.0, 2.0, 3.0, 4.0, 5.0]
    runs[("SASRec", 2)]["entropy_by_quintile"] = [3.0, 4.0, 5.0, 6.0, 8.0]
    summary = summarise(runs, ["SASRec"], [1, 2], metrics=["ndcg@10"])
    assert summary["SASRec"]["entropy_by_quintile"] == pytest.approx([2.0, 3.0, 4.0, 5.0, 6.5])


@pytest.mark.parametrize("n_items, head", [(7, 2), (11, 3), (5, 1), (12, 3)])
def test_the_head_is_the_ceiling_of_a_fifth_of_the_items(n_items, head):
    """Issue 34, planted bug: floor instead of ceil; 0.2 x n fractional for 7, 11 and 12 items."""
    from recbole_genair.data.popularity import head_items

    popularity = np.r_[0, np.arange(n_items, 0, -1)]  # item 1 the most popular
    mask = head_items(popularity)
    assert mask.sum() == head and list(np.flatnonzero(mask)) == list(range(1, head + 1)) and not mask[0]
