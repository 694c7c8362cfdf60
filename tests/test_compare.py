"""Group metrics, matrix entropy, significance marking and the one-command comparison."""
import json
import math

import numpy as np
import pytest
import torch
from recbole.evaluator.collector import DataStruct

from conftest import tiny_config
from recbole_genair.config import Config
from recbole_genair.evaluation.compare import (ablation_report, markdown_table, paired_significance, parse_seeds, reference_for, run_comparison,
                                               summarise)
from recbole_genair.evaluation.entropy import matrix_entropy
from recbole_genair.evaluation.group_metrics import GROUP_METRICS, TARGET_ITEMS, TRAIN_POPULARITY, item_groups
from recbole_genair.quick_start import main, run_recbole_genair


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


@pytest.mark.parametrize("mode", ["full", "uni100"])
def test_group_metrics_work_in_a_plain_run_and_as_valid_metric(tmp_path, mode):
    config = tiny_config(tmp_path, metrics=["NDCG", "HeadNDCG", "TailNDCG", "ColdHit"], valid_metric="TailNDCG@10",
                         eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "mode": mode})
    result = run_recbole_genair("SASRec", config_dict=config, saved=False)
    assert result["eval_mode"] == mode
    test = result["test_result"]
    assert {"ndcg@10", "headndcg@10", "tailndcg@10", "coldhit@10"} <= set(test)
    assert 0.0 <= test["tailndcg@10"] <= 1.0 and result["best_valid_score"] == result["best_valid_result"]["tailndcg@10"]


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


def test_compare_writes_table_csv_json_plots_and_skips_finished_runs(tmp_path, capsys):
    out = tmp_path / "cmp"
    settings = tiny_config(tmp_path)
    report = run_comparison(["SASRec", "SASRecGenAIR"], "genair-test", "2", out, config_dict=settings,
                            extra_test_modes=["uni100"])
    uni = report["extra_tables"]["uni100"]
    assert "sampled negatives (uni100)" in uni and uni != report["table"]
    record = json.loads((out / "runs" / "SASRec-seed2020.json").read_text())
    assert record["extra_test"]["uni100"]["ndcg@10"] >= record["test"]["ndcg@10"]  # 100 negatives: easier
    assert "test_uni100_ndcg@10" in (out / "results.csv").read_text().splitlines()[0]
    for name in ("table.md", "table_uni100.md", "results.csv", "summary.json", "ndcg_by_group.png",
                 "entropy_by_quintile.png", "head_tail_scatter.png"):
        assert (out / name).stat().st_size > 0, name
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["SASRec-seed2020.json", "SASRec-seed2021.json", "SASRecGenAIR-seed2020.json",
                    "SASRecGenAIR-seed2021.json"]
    record = json.loads((out / "runs" / "SASRecGenAIR-seed2020.json").read_text())
    assert record["trainable_params"] > 0 and record["flops_per_user"] > 0 and len(record["entropy_by_quintile"]) == 5
    assert "| SASRecGenAIR |" in report["table"] and "mean ± std over 2 seeds" in report["table"]
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    again = run_comparison(["SASRec", "SASRecGenAIR"], "genair-test", "2", out, config_dict=settings,
                           extra_test_modes=["uni100"])
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == stamps  # nothing retrained
    assert again["table"] == report["table"]
    (out / "table.md").unlink()
    only = main(["--compare", "--report_only", "--models=SASRec,SASRecGenAIR,GRU4Rec", "--seeds=2020,2021,",
                 f"--output={out}", "--extra_test_modes=uni100"])  # GRU4Rec has no runs: left out, not trained
    assert (out / "table.md").exists() and "| GRU4Rec (0 of 2 seeds) | n/a" in only["table"]
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
