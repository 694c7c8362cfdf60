"""The archetype pipeline: prompts -> archetype texts -> pooled vectors -> PCA -> `.itememb`."""
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from recbole_genair.archetype.backends import (
    OpenAICompatibleGenerator, TransformersGenerator, archetype_token_ids, load_llm, prompt_token_ids,
)
from recbole_genair.archetype.filters import filtered_item_ids
from recbole_genair.archetype.items import (
    distinguish, distinguishing_field, identical_groups, join_prompt, prompt_clauses, read_items, resolve_field_map,
)
from recbole_genair.archetype.lock import HeldLocks
from recbole_genair.archetype.pca import fit_pca, transform
from recbole_genair.archetype.pooling import pooled_views, prefill_views
from recbole_genair.archetype.settings import SettingsError, prompt_settings, signature
from recbole_genair.archetype.store import TextLog, VectorStore, atomic_write
from recbole_genair.data.itememb import file_sha256
from recbole_genair.threads import apply_threads

logger = logging.getLogger("recbole_genair.archetype")
_EXAMPLES = 5
_SHARD = re.compile(r"shard-\d+-of-\d+")


def _examples(ids):
    return ", ".join(repr(i) for i in ids[:_EXAMPLES]) + (", ..." if len(ids) > _EXAMPLES else "")


def _groups(groups):
    """The first groups of ids, as "['3', '5']; ['7', '9', '11']"."""
    shown = "; ".join(f"[{_examples(group)}]" for group in groups[:3])
    return shown + ("; ..." if len(groups) > 3 else "")


def _parse_shard(shard):
    try:
        index, count = (int(x) for x in str(shard).split("/"))
        if not 0 <= index < count:
            raise ValueError
    except ValueError:
        raise SettingsError(f"shard={shard!r}: expected i/n with 0 <= i < n, e.g. --shard=0/4") from None
    return index, count


def shard_folders(root):
    """Shard folders of a work folder, with those whose run has only taken its lock so far."""
    root = Path(root)
    names = set()
    for entry in root.iterdir() if root.is_dir() else []:
        name = entry.name[: -len(".lock")] if entry.name.endswith(".lock") else entry.name
        if _SHARD.fullmatch(name) and (entry.is_dir() or name != entry.name):
            names.add(name)
    return [root / name for name in sorted(names)]


class WorkFolder:
    """One folder of work files (the whole catalogue, or one shard) made with one set of settings.

    The run holds the folder's lock while it uses it. Work that cannot be kept (other settings or
    prompts) is refused, or with overwrite=True moved aside by `start_over()`, never deleted.
    """

    def __init__(self, path, settings, locks):
        self.path = Path(path)
        locks.hold(self.path)
        self.digest, self.values = signature(settings)
        self.meta_path = self.path / "meta.json"
        self.meta = json.loads(self.meta_path.read_text()) if self.meta_path.exists() else None
        self.replacing = None  # why the old work is to be moved aside
        if self.meta and self.meta["signature"] != self.digest:
            changed = sorted(k for k in self.values if self.meta["settings"].get(k) != self.values[k])
            mode = next((m for m in ("merge", "pca_only") if settings.get(m)), None)
            if mode:
                raise SettingsError(
                    f"{self.path} holds archetypes made with other settings (changed: {changed}); --{mode} uses the "
                    f"stored work as it is and never moves or deletes it. Rerun --{mode}=True with the stored "
                    f"settings (in {self.meta_path}), or without --{mode} and with --overwrite=True to start over."
                )
            if not settings["overwrite"]:
                raise SettingsError(
                    f"{self.path} holds archetypes made with other settings (changed: {changed}); they are not "
                    f"mixed with new ones. Rerun with --overwrite=True to start over, or set another work_dir."
                )
            self.replacing, self.meta = f"made with other settings: {changed}", None
        self.path.mkdir(parents=True, exist_ok=True)
        self.texts = TextLog(self.path / "texts.jsonl", load=self.replacing is None)

    def replace_later(self, reason):
        """Treat the folder as empty; `start_over()` moves the old work aside once the new run can start."""
        self.replacing, self.meta = reason, None
        self.texts = TextLog(self.path / "texts.jsonl", load=False)

    def start_over(self, locks):
        if self.replacing is None:
            return
        for shard in shard_folders(self.path):  # they move with it: no other run may be writing there
            locks.hold(shard)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target, n = self.path.with_name(f"{self.path.name}.replaced-{stamp}"), 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.replaced-{stamp}-{n}")
        os.rename(self.path, target)
        logger.warning(f"overwrite=True: moved the old work in {self.path} ({self.replacing}) to {target}; "
                       f"delete it once the new outputs are fine.")
        self.path.mkdir()
        self.replacing = None
        self.texts = TextLog(self.path / "texts.jsonl")

    def vectors(self, hidden_size=None):
        if self.meta is None or self.meta.get("hidden_size") is None:
            if hidden_size is None or self.replacing is not None:
                return None
            self.meta = {"signature": self.digest, "settings": self.values, "hidden_size": hidden_size}
            with atomic_write(self.meta_path) as f:
                json.dump(self.meta, f, indent=1, default=str)
        return VectorStore(self.path, self.meta["hidden_size"])


def make_prompts(settings):
    """(item table, {id: prompt}, report): paper Table 1, look-alike items told apart (distinguish_duplicates)."""
    table = read_items(settings["data_path"], settings["dataset"], settings["item_id_field"])
    field_map = resolve_field_map(settings, table)
    choice = distinguishing_field(settings, table)
    clauses, prompts, empty, no_name = {}, {}, [], []
    name_field = field_map.get("name")
    for item in table.ids:
        values = table.fields.get(item, {})
        clauses[item] = prompt_clauses(values, field_map, settings)
        prompts[item] = join_prompt(clauses[item], settings)
        if not clauses[item]:
            empty.append(item)
        elif name_field and not str(values.get(name_field, "")).strip():
            no_name.append(item)
    duplicates = identical_groups(prompts)
    if duplicates and choice is not None:
        prompts.update(distinguish(duplicates, clauses, table, field_map, settings, choice))
    identical = identical_groups(prompts)
    if table.missing_metadata:
        logger.warning(f"{len(table.missing_metadata)} items of {settings['dataset']}.inter have no row in {table.path} "
                       f"(e.g. {_examples(table.missing_metadata)}); they get a prompt without attributes.")
    if empty:
        logger.warning(f"{len(empty)} items have no metadata in the fields {list(field_map.values())} "
                       f"(e.g. {_examples(empty)}); their prompt has no attribute clause.")
    if no_name:
        logger.warning(f"{len(no_name)} items have an empty {name_field!r} (e.g. {_examples(no_name)}); "
                       f"their prompt uses their other fields.")
    _report_look_alikes(duplicates, identical, choice)
    if table.bad_encoding:
        lines = ", ".join(f"line {n} (item {i!r})" for n, i in table.bad_encoding[:_EXAMPLES])
        logger.warning(f"{len(table.bad_encoding)} lines of {table.path} are not valid UTF-8 ({lines}); "
                       f"undecodable bytes were replaced by U+FFFD. Re-encode the file as UTF-8 to keep them.")
    report = {"field_map": field_map, "empty_metadata": empty, "empty_name": no_name,
              "duplicate_prompts": duplicates if choice is not None else [], "identical_prompts": identical}
    return table, prompts, report


def _report_look_alikes(duplicates, identical, choice):
    if duplicates and choice is not None:
        told = "item id" if choice == "item_id" else f"{choice!r} value (the id where it does not tell them apart)"
        logger.warning(f"{sum(map(len, duplicates))} items share their prompt with other items ({len(duplicates)} "
                       f"groups: {_groups(duplicates)}); each of them gets a clause with its {told} "
                       f"(distinguish_duplicates: {choice}), so that no two share a vector.")
    if identical:
        fix = "Set distinguish_duplicates: item_id (or a field of the .item file) to tell them apart."
        if choice is not None:
            fix = "The added clause made them equal to other prompts: choose another distinguish_duplicates."
        logger.warning(f"{sum(map(len, identical))} items keep the same prompt as other items ({len(identical)} "
                       f"groups: {_groups(identical)}), so they get identical vectors, tied in every ranking of a "
                       f"model without an item ID table. {fix}")


def run_archetype(settings):
    """Run (or resume) the pipeline for `settings['dataset']`; return the summary dict.

    The run holds the lock of every work folder it uses, so a second run on them is refused.
    `shards: n` is for `recbole_genair.archetype.shards.run_shards` (the command line), which calls this per shard.
    """
    if settings.get("shards") is not None:
        raise SettingsError(f"shards={settings['shards']}: several processes are started by "
                            f"recbole_genair.archetype.shards.run_shards (or the command line); run_archetype runs one")
    start = time.time()
    apply_threads(settings.get("threads"))  # before the LLM loads: OpenMP's pool is sized once per process
    table, prompts, report = make_prompts(settings)
    ids = filtered_item_ids(settings, table.ids)
    work_root = Path(settings["work_dir"])
    summary = {
        "dataset": settings["dataset"], "items": len(ids), "filtered_out": len(table.ids) - len(ids),
        "field_map": report["field_map"], "empty_metadata": len(report["empty_metadata"]),
        "empty_name": len(report["empty_name"]), "distinguish_duplicates": settings.get("distinguish_duplicates"),
        "duplicate_prompts": report["duplicate_prompts"], "identical_prompts": report["identical_prompts"],
        "generated": 0, "prompt_tokens": 0, "archetype_tokens": 0, "empty_archetypes": [],
    }
    with HeldLocks() as locks:
        if not settings.get("shard"):  # this run writes the .itememb: one run at a time, whatever its work_dir
            locks.hold_output(Path(settings["output_path"]) / f"{settings['dataset']}.itememb")
        if not settings.get("merge") and not settings.get("pca_only"):
            if settings.get("shard"):
                index, count = _parse_shard(settings["shard"])
                ids = ids[index::count]
                folder = WorkFolder(work_root / f"shard-{index}-of-{count}", settings, locks)
            else:
                folder = WorkFolder(work_root, settings, locks)
            _generate_and_embed(settings, folder, ids, prompts, summary, locks)
            if settings.get("shard"):
                summary["seconds"] = time.time() - start
                summary["work_dir"] = str(folder.path)
                return summary
        summary.update(_write_outputs(settings, ids, prompts, work_root, locks, item_fields=table.header))
    summary["seconds"] = time.time() - start
    return summary


def _stale_prompts(records, ids, prompts):
    return [i for i in ids if i in records and records[i]["prompt"] != prompts[i]]


def _stale_error(stale, path):
    return SettingsError(
        f"{len(stale)} archetypes in {path} were written for other prompts (e.g. {_examples(stale)}): the .item file, "
        f"the prompt settings or distinguish_duplicates changed since. They are not kept with their old texts: rerun "
        f"with --overwrite=True to start over (the old work is moved aside), or restore the earlier file or settings."
    )


def _generate_and_embed(settings, folder, ids, prompts, summary, locks):
    stale = _stale_prompts(folder.texts.records, ids, prompts)  # finished items included
    if stale:
        if not settings["overwrite"]:
            raise _stale_error(stale, folder.path)
        folder.replace_later(f"{len(stale)} archetypes written for other prompts, e.g. {_examples(stale)}")
    store = folder.vectors()
    pending = [i for i in ids if store is None or i not in store.index]
    if not pending:
        return
    if settings["backend"] not in ("transformers", "openai"):
        raise SettingsError(f"backend={settings['backend']!r}: use 'transformers' or 'openai'")
    prefill_only = archetype_views(settings) == "prefill"
    model, tokenizer, device = load_llm(settings)
    if prefill_only:
        generator = None
    elif settings["backend"] == "openai":
        generator = OpenAICompatibleGenerator(tokenizer, settings)
    else:
        generator = TransformersGenerator(model, tokenizer, device, settings)
    prompt_ids = {i: prompt_token_ids(tokenizer, prompts[i]) for i in pending}
    folder.start_over(locks)  # the new run can start: only now is old work moved aside
    store = folder.vectors(hidden_size=model.config.hidden_size)
    order = sorted(pending, key=lambda i: len(prompt_ids[i]))  # similar lengths batch with little padding
    bar = tqdm(total=len(ids), initial=len(ids) - len(pending), unit="item", desc="archetypes", dynamic_ncols=True)
    tokens, t0 = 0, time.time()
    batch_size = int(settings["batch_size"])
    for begin in range(0, len(order), batch_size):
        batch = order[begin: begin + batch_size]
        todo = [i for i in batch if i not in folder.texts.records]
        fresh = {}  # item -> pooled views recorded while generating its text
        if prefill_only:  # no archetype: the prompt's states only, one forward pass, no generation
            folder.texts.append([prompt_record(i, prompts[i], prompt_ids[i]) for i in todo])
            fresh = dict(zip(batch, prefill_views(model, [prompt_ids[i] for i in batch], tokenizer.pad_token_id, device)))
        elif todo:
            records, fresh = _write_texts(generator, tokenizer, model, todo, prompts, prompt_ids, folder, settings)
            summary["generated"] += len(records)
            summary["empty_archetypes"] += [r["id"] for r in records if not r["archetype"]]
            tokens += sum(len(r["archetype_ids"]) for r in records)
        rest = [i for i in batch if i not in fresh]  # texts from a server or from before a restart: one more pass
        step = int(settings["embed_batch_size"])
        for sub in range(0, len(rest), step):
            part = rest[sub: sub + step]
            archetype_ids = [folder.texts.records[i]["archetype_ids"] for i in part]
            fresh.update(zip(part, pooled_views(model, [prompt_ids[i] for i in part], archetype_ids,
                                                tokenizer.pad_token_id, device)))
        store.append(batch, np.stack([fresh[i] for i in batch]))
        summary["prompt_tokens"] += sum(len(prompt_ids[i]) for i in batch)
        summary["archetype_tokens"] += sum(len(folder.texts.records[i]["archetype_ids"]) for i in batch)
        bar.update(len(batch))
        bar.set_postfix(gen_tok_s=f"{tokens / max(time.time() - t0, 1e-9):.0f}")
    bar.close()


def archetype_views(settings):
    """`archetype_views`: both (GenAIR: prompt and archetype) or prefill (the prompt alone, no generation)."""
    views = settings.get("archetype_views") or "both"
    if views not in ("both", "prefill"):
        raise SettingsError(f"archetype_views must be 'both' or 'prefill', not {views!r}")
    return views


def prompt_record(item, prompt, prompt_ids):
    """The text log's record of an item embedded from its prompt alone (`archetype_views: prefill`)."""
    return {"id": item, "prompt": prompt, "archetype": "", "archetype_ids": [], "finished": True, "retried": False,
            "prompt_tokens": len(prompt_ids)}


def states_while_generating(settings, generator):
    """Whether `generator` keeps the states as it writes the texts (`states_from: generation` on a local model)."""
    mode = settings.get("states_from") or "generation"  # settings stored before the key: generation
    if mode not in ("generation", "teacher_forced"):
        raise SettingsError(f"states_from must be 'generation' or 'teacher_forced', not {mode!r}")
    return mode == "generation" and isinstance(generator, TransformersGenerator)


def _write_texts(generator, tokenizer, model, todo, prompts, prompt_ids, folder, settings):
    """Generate and log the archetypes of `todo`; (records, {item: pooled views} when generation recorded them)."""
    pool = states_while_generating(settings, generator)
    records, pooled = archetype_records(generator, tokenizer, model, todo, prompts, prompt_ids, pool=pool)
    folder.texts.append(records)
    return records, pooled


def archetype_records(generator, tokenizer, model, todo, prompts, prompt_ids, pool=False):
    """Generate the archetypes of `todo` (an empty text is retried once with sampling); one record per item, and
    with `pool` (a local model) {item: its pooled views from the generation pass}."""
    kwargs = {"pool": True} if pool else {}
    gens = generator.generate([prompts[i] for i in todo], [prompt_ids[i] for i in todo], **kwargs)
    retried = [k for k, g in enumerate(gens) if not g.text]
    if retried:  # one retry with sampling: a greedy retry would repeat the empty text
        again = generator.generate([prompts[todo[k]] for k in retried], [prompt_ids[todo[k]] for k in retried],
                                   sample=True, **kwargs)
        for k, g in zip(retried, again):
            gens[k] = g
        still = [todo[k] for k, g in zip(retried, again) if not g.text]
        if still:
            logger.warning(f"the LLM returned empty text twice for {len(still)} items ({_examples(still)}); "
                           f"their decoding view is the end-of-text token only.")
    records = [
        {
            "id": item,
            "prompt": prompts[item],
            "archetype": g.text,
            "archetype_ids": archetype_token_ids(tokenizer, model, g),
            "finished": g.finished,
            "retried": k in retried,
            "prompt_tokens": len(prompt_ids[item]),
        }
        for k, (item, g) in enumerate(zip(todo, gens))
    ]
    return records, {item: g.pooled for item, g in zip(todo, gens) if g.pooled is not None}


def _work_folders(work_root, settings, locks):
    """The root work folder and its shards, each locked; with overwrite=True, shards of other settings move aside."""
    folders = [WorkFolder(work_root, settings, locks)]
    for shard_dir in shard_folders(work_root):
        locks.hold(shard_dir)
        if shard_dir.is_dir():
            folder = WorkFolder(shard_dir, settings, locks)
            folder.start_over(locks)
            folders.append(folder)
    return folders


def _write_outputs(settings, ids, prompts, work_root, locks, item_fields=None):
    """Gather vectors from the work folder and its shards, fit PCA per view, write the outputs atomically."""
    folders = _work_folders(work_root, settings, locks)
    located, texts = {}, {}
    for folder in folders:
        store = folder.vectors()
        if store is not None:
            matrix = store.matrix()  # one memory map per store, not per item
            for item, row in store.index.items():
                located.setdefault(item, (matrix, row))
        for item, record in folder.texts.records.items():
            texts.setdefault(item, record)
    missing = [i for i in ids if i not in located or i not in texts]
    if missing:
        raise SettingsError(
            f"{len(missing)} of {len(ids)} items have no archetype vector yet (e.g. {_examples(missing)}): run the "
            f"remaining shards (--shard=i/n) or rerun without --shard, then merge again."
        )
    stale = _stale_prompts(texts, ids, prompts)
    if stale:
        raise _stale_error(stale, work_root)
    first = {}
    for item in ids:  # identical inputs: one vector, without the noise of batching them apart
        source = first.setdefault((texts[item]["prompt"], tuple(texts[item]["archetype_ids"])), item)
        located[item] = located[source]
    hidden = next(iter(located.values()))[0].shape[2]
    assembled_path = work_root / "assembled.f32"
    with atomic_write(assembled_path, "wb") as f:
        for begin in range(0, len(ids), 4096):
            part = ids[begin: begin + 4096]
            f.write(np.stack([located[i][0][located[i][1]] for i in part]).astype(np.float32).tobytes())
    rows = np.memmap(assembled_path, dtype=np.float32, mode="r", shape=(len(ids), 2, hidden))
    n_components = settings["pca_components"]
    fits = [fit_pca(rows, 0, n_components)]
    if archetype_views(settings) == "prefill":  # no decoding view: no columns for it
        fits.append((np.zeros(hidden), np.zeros((hidden, 0)), 0.0))
    else:
        fits.append(fit_pca(rows, 1, n_components))
    out_dir = Path(settings["output_path"])
    out_dir.mkdir(parents=True, exist_ok=True)
    itememb = out_dir / f"{settings['dataset']}.itememb"
    checksum, seen, alike = hashlib.sha256(), {}, {}
    with atomic_write(itememb, "wb") as f:
        def emit(text):
            data = text.encode("utf-8")
            checksum.update(data)
            f.write(data)

        emit("iid:token\titem_emb:float_seq\n")
        chunks = zip(*(transform(rows, view, mean, comp) for view, (mean, comp, _) in enumerate(fits)))
        row = 0
        for prefill, decoding in chunks:
            lines = []
            for vector in np.concatenate([prefill, decoding], axis=1):
                values = " ".join(f"{v:.6g}" for v in vector)
                source = seen.setdefault(hashlib.blake2b(values.encode(), digest_size=16).digest(), ids[row])
                if source != ids[row]:
                    alike.setdefault(source, [source]).append(ids[row])
                lines.append(ids[row] + "\t" + values + "\n")
                row += 1
            emit("".join(lines))
    identical = list(alike.values())
    if identical:
        logger.warning(f"{sum(map(len, identical))} items have the same vector in {itememb} as other items "
                       f"({len(identical)} groups: {_groups(identical)}): a model without an item ID table cannot "
                       f"tell them apart. Their prompts and archetypes coincide; see distinguish_duplicates.")
    digest, values = signature(settings)
    views = {name: int(comp.shape[1]) for name, (_, comp, _) in zip(("prefill", "decoding"), fits)}
    # the basis that maps the LLM's states into the .itememb columns: items added later are mapped with it
    basis_path = out_dir / f"{settings['dataset']}.itememb.pca.npz"
    with atomic_write(basis_path, "wb") as f:
        np.savez(f, **{f"{name}_{part}": array for name, (mean, comp, _) in zip(("prefill", "decoding"), fits)
                       for part, array in (("mean", mean), ("components", comp))})
    with atomic_write(out_dir / f"{settings['dataset']}.itememb.json") as f:
        json.dump({"views": views, "order": ["prefill", "decoding"], "llm_model": settings["llm_model"],
                   "llm_hidden_size": hidden, "explained_variance": [kept for _, _, kept in fits],
                   "signature": digest, "itememb_sha256": checksum.hexdigest(), "rows": len(ids),
                   "columns": sum(views.values()), "pca_file": basis_path.name,
                   "pca_sha256": file_sha256(basis_path), "settings": prompt_settings(settings),
                   "item_fields": item_fields}, f, indent=1)
    archetype = out_dir / f"{settings['dataset']}.archetype"
    with atomic_write(archetype) as f:
        for item in ids:
            r = texts[item]
            f.write(json.dumps({"id": item, "prompt": r["prompt"], "archetype": r["archetype"],
                                "model": settings["llm_model"], "settings": {"signature": digest, **values}},
                               ensure_ascii=False) + "\n")
    return {
        "pca": [{"view": name, "components": comp.shape[1], "explained_variance": kept}
                for name, (_, comp, kept) in zip(("prefill", "decoding"), fits)],
        "itememb": str(itememb),
        "archetype": str(archetype),
        "raw_vectors": str(assembled_path),
        "llm_hidden_size": hidden,
        "identical_vectors": identical,
    }


def format_summary(summary):
    dropped = f" ({summary['filtered_out']} more dropped by RecBole's filters)" if summary.get("filtered_out") else ""
    lines = [f"archetypes for {summary['dataset']}: {summary['items']} items in the interactions{dropped}"]
    lines.append(f"  generated this run: {summary['generated']} items, {summary['prompt_tokens']} prompt tokens and "
                 f"{summary['archetype_tokens']} archetype tokens embedded, {summary['seconds']:.1f} s")
    lines.append(f"  prompt fields: {summary['field_map']}")
    if summary["empty_name"]:
        lines.append(f"  items with an empty name field (prompted from their other fields): {summary['empty_name']}")
    if summary["empty_metadata"]:
        lines.append(f"  items without metadata (prompt has no attribute clause): {summary['empty_metadata']}")
    if summary.get("duplicate_prompts"):
        groups = summary["duplicate_prompts"]
        lines.append(f"  items whose prompts coincided, told apart by distinguish_duplicates="
                     f"{summary['distinguish_duplicates']}: {sum(map(len, groups))} ({_groups(groups)})")
    for key, what in (("identical_prompts", "prompt"), ("identical_vectors", "vector")):
        if summary.get(key):
            lines.append(f"  items with the same {what} as another item: {sum(map(len, summary[key]))} "
                         f"({_groups(summary[key])})")
    if summary["empty_archetypes"]:
        lines.append(f"  items whose archetype stayed empty after a retry: {len(summary['empty_archetypes'])} "
                     f"({_examples(summary['empty_archetypes'])})")
    for fit in summary.get("pca", []):
        lines.append(f"  PCA {fit['view']}: {fit['components']} components keep {fit['explained_variance']:.1%} of the variance")
    for key in ("itememb", "archetype", "raw_vectors", "work_dir"):
        if key in summary:
            lines.append(f"  {key}: {summary[key]}")
    return "\n".join(lines)
