"""The archetype preprocessor never gives a silent wrong result (issue 14): one run per work folder,
an overwrite that keeps the old work until the new run can start, no two items sharing a vector
unless asked, a checksum of the written vectors, RecBole's filters, and settings errors for people."""
import hashlib
import json
import logging
import re
import socket
import subprocess
import sys
from collections import Counter

import pytest

from conftest import tiny_config
from recbole_genair.archetype import format_summary, load_settings, run_archetype
from recbole_genair.archetype.__main__ import main
from recbole_genair.archetype.items import ItemFileError, read_items
from recbole_genair.archetype.pipeline import make_prompts
from recbole_genair.archetype.settings import SettingsError
from recbole_genair.quick_start import run_recbole_genair
from test_archetype import dataset_without_vectors, read_jsonl, settings_for, tiny_llm_dir  # noqa: F401

HOLD_LOCK = (
    "import sys, time\n"
    "from recbole_genair.archetype.lock import WorkLock\n"
    "WorkLock(sys.argv[1]).acquire()\n"
    "print('locked', flush=True)\n"
    "time.sleep(600)\n"
)


def hold_lock(folder):
    """Another process that takes the lock of `folder` through the module's API and keeps it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True)
    if holder.stdout.readline().strip() != "locked":
        holder.kill()
        holder.wait()
        pytest.fail("the holder process could not take the lock")
    return holder


def stop(holder):
    holder.kill()  # SIGKILL: the lock must go with the process, however it ends
    holder.wait()


def itememb_rows(path):
    with open(path, encoding="utf-8") as f:
        f.readline()
        return dict(line.rstrip("\n").split("\t") for line in f)


def set_item_rows(folder, name, rows):
    """Replace the .item rows of the given ids ({id: 'title<TAB>category<TAB>brand<TAB>price'})."""
    path = folder / f"{name}.item"
    lines = path.read_text(encoding="utf-8").split("\n")
    for k, line in enumerate(lines):
        item = line.split("\t", 1)[0]
        if item in rows:
            lines[k] = f"{item}\t{rows[item]}"
    path.write_text("\n".join(lines), encoding="utf-8")


def work_files(work):
    return {p.name: p.read_bytes() for p in sorted(work.iterdir()) if p.is_file()}


# 1. one run per work folder

def test_a_work_folder_in_use_is_refused_and_freed_when_its_holder_dies(tmp_path, tiny_llm_dir):
    folder = dataset_without_vectors(tmp_path, "locked")
    settings = settings_for(folder, tiny_llm_dir)
    holder = hold_lock(settings["work_dir"])
    try:
        pattern = rf"in use by another run: process {holder.pid} on {re.escape(socket.gethostname())} \(since .*--shard"
        with pytest.raises(SettingsError, match=pattern):
            run_archetype(settings)
        assert not (folder / "locked.itememb").exists()
    finally:
        stop(holder)
    run_archetype(settings)  # the killed holder's lock is gone
    run_archetype(settings)  # and a finished run released its own


HOLD_OUTPUT = HOLD_LOCK.replace("WorkLock", "OutputLock")


def test_two_runs_with_other_work_folders_cannot_write_one_itememb(tmp_path, tiny_llm_dir):
    """Issue 34: runs with different --work_dir and one output folder both exited 0, the last one's file kept."""
    folder = dataset_without_vectors(tmp_path, "shared")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_OUTPUT, str(folder / "shared.itememb")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        other_work = settings_for(folder, tiny_llm_dir, work_dir=str(tmp_path / "elsewhere"))
        with pytest.raises(SettingsError, match=rf"shared.itememb is being written by another run: process {holder.pid} "
                                                 r".*another output_path"):
            run_archetype(other_work)
        assert not (folder / "shared.itememb").exists() and not (tmp_path / "elsewhere").exists()  # refused first
        run_archetype(settings_for(folder, tiny_llm_dir, shard="0/2"))  # a shard writes no .itememb: not held up
    finally:
        stop(holder)
    run_archetype(settings_for(folder, tiny_llm_dir, work_dir=str(tmp_path / "elsewhere")))
    assert len(itememb_rows(folder / "shared.itememb")) == len(read_items(folder, "shared").ids)


def test_shards_lock_their_own_folder_and_merge_locks_every_shard(tmp_path, tiny_llm_dir):
    folder = dataset_without_vectors(tmp_path, "parts")
    holder = hold_lock(folder / "parts.archetype-work" / "shard-0-of-2")
    try:
        run_archetype(settings_for(folder, tiny_llm_dir, shard="1/2"))  # another shard runs beside it
        for busy in ({"shard": "0/2"}, {"merge": True}, {"pca_only": True}):
            with pytest.raises(SettingsError, match=rf"shard-0-of-2 is in use by another run: process {holder.pid} "):
                run_archetype(settings_for(folder, tiny_llm_dir, **busy))
    finally:
        stop(holder)
    run_archetype(settings_for(folder, tiny_llm_dir, shard="0/2"))
    run_archetype(settings_for(folder, tiny_llm_dir, merge=True))
    assert len(itememb_rows(folder / "parts.itememb")) == len(read_items(folder, "parts").ids)


# 2. overwrite keeps the old work until the new run can start

def test_overwrite_with_a_mistyped_model_keeps_the_old_work(tmp_path, tiny_llm_dir):
    folder = dataset_without_vectors(tmp_path, "keep")
    run_archetype(settings_for(folder, tiny_llm_dir))
    work = folder / "keep.archetype-work"
    before = work_files(work)
    (folder / "keep.itememb").unlink()
    typo = str(tmp_path / "tiny-lmm")
    with pytest.raises(FileNotFoundError, match=re.escape(repr(typo))):
        run_archetype(settings_for(folder, typo, overwrite=True))
    assert work_files(work) == before
    assert not list(folder.glob("keep.archetype-work.replaced-*"))
    run_archetype(settings_for(folder, tiny_llm_dir, pca_only=True))
    assert len(itememb_rows(folder / "keep.itememb")) == len(read_items(folder, "keep").ids)


def test_overwrite_moves_the_old_work_aside(tmp_path, tiny_llm_dir, caplog):
    folder = dataset_without_vectors(tmp_path, "moved")
    run_archetype(settings_for(folder, tiny_llm_dir))
    work = folder / "moved.archetype-work"
    before = work_files(work)
    caplog.set_level(logging.WARNING)
    run_archetype(settings_for(folder, tiny_llm_dir, max_new_tokens=3, overwrite=True))
    replaced = list(folder.glob("moved.archetype-work.replaced-*"))
    assert len(replaced) == 1 and work_files(replaced[0]) == before
    assert str(replaced[0]) in caplog.text
    assert json.loads((work / "meta.json").read_text())["settings"]["max_new_tokens"] == 3


def test_pca_only_and_merge_refuse_other_settings_and_move_nothing(tmp_path, tiny_llm_dir):
    folder = dataset_without_vectors(tmp_path, "still")
    run_archetype(settings_for(folder, tiny_llm_dir))
    work = folder / "still.archetype-work"
    before = work_files(work)
    for mode in ("pca_only", "merge"):
        with pytest.raises(SettingsError, match=rf"changed: \['max_new_tokens'\].*{mode}"):
            run_archetype(settings_for(folder, tiny_llm_dir, max_new_tokens=3, overwrite=True, **{mode: True}))
    assert work_files(work) == before
    assert not list(folder.glob("still.archetype-work.replaced-*"))


# 3. look-alike items

def test_items_with_identical_prompts_get_their_id_and_distinct_vectors(tmp_path, tiny_llm_dir, caplog):
    folder = dataset_without_vectors(tmp_path, "twins")
    set_item_rows(folder, "twins", {"3": "\t\t\t", "5": "\t\t\t"})
    caplog.set_level(logging.WARNING)
    summary = run_archetype(settings_for(folder, tiny_llm_dir))
    prompts = {r["id"]: r["prompt"] for r in read_jsonl(folder / "twins.archetype")}
    assert "The item id is 3. What potential users" in prompts["3"]
    assert "The item id is 5. What potential users" in prompts["5"]
    assert sum("The item id is" in p for p in prompts.values()) == 2  # the other items keep their prompt
    rows = itememb_rows(folder / "twins.itememb")
    assert rows["3"] != rows["5"]
    assert summary["duplicate_prompts"] == [["3", "5"]]
    assert summary["identical_prompts"] == [] and summary["identical_vectors"] == []
    assert "2 items share their prompt" in caplog.text and "['3', '5']" in caplog.text
    assert "['3', '5']" in format_summary(summary)


def test_identical_prompts_kept_on_request_are_reported_and_share_a_row(tmp_path, tiny_llm_dir, caplog):
    folder = dataset_without_vectors(tmp_path, "shared")
    set_item_rows(folder, "shared", {"3": "\t\t\t", "5": "\t\t\t"})
    caplog.set_level(logging.WARNING)
    summary = run_archetype(settings_for(folder, tiny_llm_dir, distinguish_duplicates=None))
    prompts = {r["id"]: r["prompt"] for r in read_jsonl(folder / "shared.archetype")}
    assert prompts["3"] == prompts["5"]
    rows = itememb_rows(folder / "shared.itememb")
    assert rows["3"] == rows["5"]
    assert summary["identical_prompts"] == [["3", "5"]] and summary["identical_vectors"] == [["3", "5"]]
    assert "identical vectors" in caplog.text and "['3', '5']" in caplog.text
    report = format_summary(summary)
    assert "same prompt" in report and "same vector" in report and "['3', '5']" in report


def test_a_chosen_field_tells_look_alikes_apart_and_falls_back_to_the_id(tmp_path, tiny_llm_dir):
    folder = dataset_without_vectors(tmp_path, "field")
    set_item_rows(folder, "field", {"3": "Pen\tPens\tAcme\t1.00", "5": "Pen\tPens\tAcme\t2.00",
                                  "7": "Pen\tPens\tAcme\t2.00"})
    summary = run_archetype(settings_for(folder, tiny_llm_dir, distinguish_duplicates="price"))
    prompts = {r["id"]: r["prompt"] for r in read_jsonl(folder / "field.archetype")}
    assert "The item brand is Acme. The item price is 1.00. What" in prompts["3"]
    assert "The item brand is Acme. The item id is 5. What" in prompts["5"]  # same price as item 7
    assert "The item brand is Acme. The item id is 7. What" in prompts["7"]
    assert [sorted(g) for g in summary["duplicate_prompts"]] == [["3", "5", "7"]]
    assert summary["identical_prompts"] == []


def test_an_unknown_distinguishing_field_lists_the_file_fields(tmp_path, tiny_llm_dir):
    folder = dataset_without_vectors(tmp_path, "colour")
    with pytest.raises(ItemFileError, match=r"distinguish_duplicates='colour'.*\['item_id', 'title', 'category'"):
        run_archetype(settings_for(folder, tiny_llm_dir, distinguish_duplicates="colour"))


def test_finished_items_whose_prompt_changed_are_refused(tmp_path, tiny_llm_dir):
    folder = dataset_without_vectors(tmp_path, "stale")
    set_item_rows(folder, "stale", {"3": "\t\t\t", "5": "\t\t\t"})
    run_archetype(settings_for(folder, tiny_llm_dir, distinguish_duplicates=None))  # every item finished
    for mode in ({}, {"pca_only": True}):  # now the look-alikes get their id: their stored texts are stale
        with pytest.raises(SettingsError, match=r"2 archetypes .*'3', '5'.*--overwrite=True"):
            run_archetype(settings_for(folder, tiny_llm_dir, **mode))
    run_archetype(settings_for(folder, tiny_llm_dir, overwrite=True))
    prompts = {r["id"]: r["prompt"] for r in read_jsonl(folder / "stale.archetype")}
    assert "The item id is 3." in prompts["3"]


# 4. view widths with a checksum

def test_itememb_json_holds_the_checksum_rows_and_columns_of_the_file(tmp_path, tiny_llm_dir):
    folder = dataset_without_vectors(tmp_path, "sum")
    run_archetype(settings_for(folder, tiny_llm_dir))
    meta = json.loads((folder / "sum.itememb.json").read_text())
    assert meta["itememb_sha256"] == hashlib.sha256((folder / "sum.itememb").read_bytes()).hexdigest()
    assert meta["rows"] == len(read_items(folder, "sum").ids)
    assert meta["columns"] == sum(meta["views"].values()) == 12
    assert meta["order"] == ["prefill", "decoding"] and "signature" in meta  # earlier keys stay


# 5. RecBole's filters

def test_vectors_only_for_the_items_recbole_keeps_after_filtering(tmp_path, tiny_llm_dir):
    folder = dataset_without_vectors(tmp_path, "kcore")
    summary = run_archetype(settings_for(folder, tiny_llm_dir, item_inter_num_interval="[5,inf)"))
    with open(folder / "kcore.inter", encoding="utf-8") as f:
        f.readline()
        counts = Counter(line.split("\t")[1] for line in f)
    everything = read_items(folder, "kcore").ids
    kept = [i for i in everything if counts[i] >= 5]
    assert 0 < len(kept) < len(everything)
    with open(folder / "kcore.itememb", encoding="utf-8") as f:
        f.readline()
        assert [line.split("\t", 1)[0] for line in f] == kept  # .inter first-seen order
    assert summary["items"] == len(kept)
    config = tiny_config(tmp_path, data_path=str(tmp_path / "data"), dataset="kcore", item_inter_num_interval="[5,inf)")
    result = run_recbole_genair("SASRecGenAIR", config_dict=config, saved=False)
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0


def test_recbole_intervals_on_the_command_line_are_taken_as_recbole_takes_them():
    args = ["--item_inter_num_interval=[5,inf)", "--val_interval={rating: '[3,5]'}"]
    settings = load_settings("ml-100k", cmd_args=args)
    assert settings["item_inter_num_interval"] == "[5,inf)"  # not valid YAML: kept as text, as RecBole keeps it
    assert settings["val_interval"] == {"rating": "[3,5]"}
    broken = load_settings("ml-100k", cmd_args=["--prompt_fields={name: movie_title"])  # text, refused where used
    with pytest.raises(ItemFileError, match=r"prompt_fields='\{name: movie_title' is not a mapping"):
        make_prompts(broken)


# 6. the command line and settings files

def test_flags_are_not_abbreviated(tmp_path, tiny_llm_dir):
    folder = dataset_without_vectors(tmp_path, "abbrev")
    with pytest.raises(SettingsError, match=r"'data' \(command line; did you mean 'dataset' or 'data_path'\?\)"):
        main(["--dataset=abbrev", f"--data={folder}", f"--llm_model={tiny_llm_dir}"])
    with pytest.raises(SettingsError, match=r"'config' \(command line; did you mean 'config_files'"):
        main(["--dataset=abbrev", f"--data_path={folder}", "--config=a.yaml"])


def test_misspelled_settings_name_the_closest_key_and_where_they_came_from(tmp_path):
    config_file = tmp_path / "mine.yaml"
    config_file.write_text("max_new_token: 4\n")
    with pytest.raises(SettingsError) as error:
        load_settings("ml-100k", [str(config_file)], config_dict={"llm_modle": "x"}, cmd_args=["--pca_component=3"])
    message = str(error.value)
    assert f"'max_new_token' ({config_file}; did you mean 'max_new_tokens'?)" in message
    assert "'llm_modle' (config_dict; did you mean 'llm_model'?)" in message
    assert "'pca_component' (command line; did you mean 'pca_components'?)" in message


def test_an_invalid_yaml_file_is_named_with_its_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("llm_model: x\nprompt_fields: {name: title\nbatch_size: 2\n")
    with pytest.raises(SettingsError, match=rf"{re.escape(str(broken))} is not valid YAML \(line 3, .* from line 2\)"):
        load_settings("ml-100k", [str(broken)])
    listed = tmp_path / "listed.yaml"
    listed.write_text("- llm_model: x\n")
    with pytest.raises(SettingsError, match=rf"{re.escape(str(listed))} holds a list, not key: value settings"):
        load_settings("ml-100k", [str(listed)])
