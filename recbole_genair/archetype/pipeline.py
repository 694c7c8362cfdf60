"""The archetype pipeline: prompts -> archetype texts -> pooled vectors -> PCA -> `.itememb`."""
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from recbole_genair.archetype.backends import (
    OpenAICompatibleGenerator, TransformersGenerator, archetype_token_ids, load_llm, prompt_token_ids,
)
from recbole_genair.archetype.items import build_prompt, read_items, resolve_field_map
from recbole_genair.archetype.pca import fit_pca, transform
from recbole_genair.archetype.pooling import pooled_views
from recbole_genair.archetype.settings import SettingsError, signature
from recbole_genair.archetype.store import TextLog, VectorStore, atomic_write

logger = logging.getLogger("recbole_genair.archetype")
_EXAMPLES = 5


def _examples(ids):
    return ", ".join(repr(i) for i in ids[:_EXAMPLES]) + (", ..." if len(ids) > _EXAMPLES else "")


def _parse_shard(shard):
    try:
        index, count = (int(x) for x in str(shard).split("/"))
        if not 0 <= index < count:
            raise ValueError
    except ValueError:
        raise SettingsError(f"shard={shard!r}: expected i/n with 0 <= i < n, e.g. --shard=0/4") from None
    return index, count


class WorkFolder:
    """One folder of work files (the whole catalogue, or one shard) made with one set of settings."""

    def __init__(self, path, settings):
        self.path = Path(path)
        self.digest, self.values = signature(settings)
        self.meta_path = self.path / "meta.json"
        self.meta = json.loads(self.meta_path.read_text()) if self.meta_path.exists() else None
        if self.meta and self.meta["signature"] != self.digest:
            changed = sorted(k for k in self.values if self.meta["settings"].get(k) != self.values[k])
            if not settings["overwrite"]:
                raise SettingsError(
                    f"{self.path} holds archetypes made with other settings (changed: {changed}); they are not "
                    f"mixed with new ones. Rerun with --overwrite=True to start over, or set another work_dir."
                )
            logger.warning(f"overwrite=True: removing {self.path} (made with other settings: {changed})")
            shutil.rmtree(self.path)
            self.meta = None
        self.path.mkdir(parents=True, exist_ok=True)
        self.texts = TextLog(self.path / "texts.jsonl")

    def vectors(self, hidden_size=None):
        if self.meta is None or self.meta.get("hidden_size") is None:
            if hidden_size is None:
                return None
            self.meta = {"signature": self.digest, "settings": self.values, "hidden_size": hidden_size}
            with atomic_write(self.meta_path) as f:
                json.dump(self.meta, f, indent=1, default=str)
        return VectorStore(self.path, self.meta["hidden_size"])


def make_prompts(settings):
    table = read_items(settings["data_path"], settings["dataset"], settings["item_id_field"])
    field_map = resolve_field_map(settings, table)
    prompts, empty, no_name = {}, [], []
    name_field = field_map.get("name")
    for item in table.ids:
        values = table.fields.get(item, {})
        prompts[item], n_clauses = build_prompt(values, field_map, settings)
        if n_clauses == 0:
            empty.append(item)
        elif name_field and not str(values.get(name_field, "")).strip():
            no_name.append(item)
    if table.missing_metadata:
        logger.warning(f"{len(table.missing_metadata)} items of {settings['dataset']}.inter have no row in {table.path} "
                       f"(e.g. {_examples(table.missing_metadata)}); they get a prompt without attributes.")
    if empty:
        logger.warning(f"{len(empty)} items have no metadata in the fields {list(field_map.values())} "
                       f"(e.g. {_examples(empty)}); their prompt has no attribute clause.")
    if no_name:
        logger.warning(f"{len(no_name)} items have an empty {name_field!r} (e.g. {_examples(no_name)}); "
                       f"their prompt uses their other fields.")
    if table.bad_encoding:
        lines = ", ".join(f"line {n} (item {i!r})" for n, i in table.bad_encoding[:_EXAMPLES])
        logger.warning(f"{len(table.bad_encoding)} lines of {table.path} are not valid UTF-8 ({lines}); "
                       f"undecodable bytes were replaced by U+FFFD. Re-encode the file as UTF-8 to keep them.")
    return table, prompts, field_map, empty, no_name


def run_archetype(settings):
    """Run (or resume) the pipeline for `settings['dataset']`; return the summary dict."""
    start = time.time()
    table, prompts, field_map, empty_metadata, no_name = make_prompts(settings)
    ids = table.ids
    work_root = Path(settings["work_dir"])
    summary = {
        "dataset": settings["dataset"], "items": len(ids), "field_map": field_map,
        "empty_metadata": len(empty_metadata), "empty_name": len(no_name),
        "generated": 0, "prompt_tokens": 0, "archetype_tokens": 0, "empty_archetypes": [],
    }
    if not settings.get("merge") and not settings.get("pca_only"):
        if settings.get("shard"):
            index, count = _parse_shard(settings["shard"])
            ids = ids[index::count]
            folder = WorkFolder(work_root / f"shard-{index}-of-{count}", settings)
        else:
            folder = WorkFolder(work_root, settings)
        _generate_and_embed(settings, folder, ids, prompts, summary)
        if settings.get("shard"):
            summary["seconds"] = time.time() - start
            summary["work_dir"] = str(folder.path)
            return summary
    summary.update(_write_outputs(settings, table.ids, work_root))
    summary["seconds"] = time.time() - start
    return summary


def _generate_and_embed(settings, folder, ids, prompts, summary):
    store = folder.vectors()
    pending = [i for i in ids if store is None or i not in store.index]
    if not pending:
        return
    model, tokenizer, device = load_llm(settings)
    store = folder.vectors(hidden_size=model.config.hidden_size)
    if settings["backend"] == "openai":
        generator = OpenAICompatibleGenerator(tokenizer, settings)
    elif settings["backend"] == "transformers":
        generator = TransformersGenerator(model, tokenizer, device, settings)
    else:
        raise SettingsError(f"backend={settings['backend']!r}: use 'transformers' or 'openai'")
    stale = [i for i in pending if i in folder.texts.records and folder.texts.records[i]["prompt"] != prompts[i]]
    if stale:
        raise SettingsError(
            f"{len(stale)} archetypes in {folder.path} were written for other prompts (e.g. {_examples(stale)}: the "
            f".item file or the prompt fields changed). Rerun with --overwrite=True to start over."
        )
    prompt_ids = {i: prompt_token_ids(tokenizer, prompts[i]) for i in pending}
    order = sorted(pending, key=lambda i: len(prompt_ids[i]))  # similar lengths batch with little padding
    bar = tqdm(total=len(ids), initial=len(ids) - len(pending), unit="item", desc="archetypes", dynamic_ncols=True)
    tokens, t0 = 0, time.time()
    batch_size = int(settings["batch_size"])
    for begin in range(0, len(order), batch_size):
        batch = order[begin: begin + batch_size]
        todo = [i for i in batch if i not in folder.texts.records]
        if todo:
            records = _write_texts(generator, tokenizer, model, todo, prompts, prompt_ids, folder, settings)
            summary["generated"] += len(records)
            summary["empty_archetypes"] += [r["id"] for r in records if not r["archetype"]]
            tokens += sum(len(r["archetype_ids"]) for r in records)
        step = int(settings["embed_batch_size"])
        for sub in range(0, len(batch), step):
            part = batch[sub: sub + step]
            archetype_ids = [folder.texts.records[i]["archetype_ids"] for i in part]
            pooled = pooled_views(model, [prompt_ids[i] for i in part], archetype_ids, tokenizer.pad_token_id, device)
            store.append(part, pooled)
            summary["prompt_tokens"] += sum(len(prompt_ids[i]) for i in part)
            summary["archetype_tokens"] += sum(len(a) for a in archetype_ids)
        bar.update(len(batch))
        bar.set_postfix(gen_tok_s=f"{tokens / max(time.time() - t0, 1e-9):.0f}")
    bar.close()


def _write_texts(generator, tokenizer, model, todo, prompts, prompt_ids, folder, settings):
    gens = generator.generate([prompts[i] for i in todo], [prompt_ids[i] for i in todo])
    retried = [k for k, g in enumerate(gens) if not g.text]
    if retried:  # one retry with sampling: a greedy retry would repeat the empty text
        again = generator.generate([prompts[todo[k]] for k in retried], [prompt_ids[todo[k]] for k in retried], sample=True)
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
    folder.texts.append(records)
    return records


def _work_folders(work_root, settings):
    folders = [WorkFolder(work_root, settings)]
    for shard_dir in sorted(work_root.glob("shard-*-of-*")):
        folders.append(WorkFolder(shard_dir, settings))
    return folders


def _write_outputs(settings, ids, work_root):
    """Gather vectors from the work folder and its shards, fit PCA per view, write the outputs atomically."""
    folders = _work_folders(work_root, settings)
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
    hidden = next(iter(located.values()))[0].shape[2]
    assembled_path = work_root / "assembled.f32"
    with atomic_write(assembled_path, "wb") as f:
        for begin in range(0, len(ids), 4096):
            part = ids[begin: begin + 4096]
            f.write(np.stack([located[i][0][located[i][1]] for i in part]).astype(np.float32).tobytes())
    rows = np.memmap(assembled_path, dtype=np.float32, mode="r", shape=(len(ids), 2, hidden))
    n_components = settings["pca_components"]
    fits = [fit_pca(rows, view, n_components) for view in (0, 1)]
    out_dir = Path(settings["output_path"])
    out_dir.mkdir(parents=True, exist_ok=True)
    itememb = out_dir / f"{settings['dataset']}.itememb"
    with atomic_write(itememb) as f:
        f.write("iid:token\titem_emb:float_seq\n")
        chunks = zip(*(transform(rows, view, mean, comp) for view, (mean, comp, _) in enumerate(fits)))
        row = 0
        for prefill, decoding in chunks:
            both = np.concatenate([prefill, decoding], axis=1)
            for vector in both:
                f.write(ids[row] + "\t" + " ".join(f"{v:.6g}" for v in vector) + "\n")
                row += 1
    digest, values = signature(settings)
    views = {name: int(comp.shape[1]) for name, (_, comp, _) in zip(("prefill", "decoding"), fits)}
    with atomic_write(out_dir / f"{settings['dataset']}.itememb.json") as f:
        json.dump({"views": views, "order": ["prefill", "decoding"], "llm_model": settings["llm_model"],
                   "llm_hidden_size": hidden, "explained_variance": [kept for _, _, kept in fits],
                   "signature": digest}, f, indent=1)
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
    }


def format_summary(summary):
    lines = [f"archetypes for {summary['dataset']}: {summary['items']} items in the interactions"]
    lines.append(f"  generated this run: {summary['generated']} items, {summary['prompt_tokens']} prompt tokens and "
                 f"{summary['archetype_tokens']} archetype tokens embedded, {summary['seconds']:.1f} s")
    lines.append(f"  prompt fields: {summary['field_map']}")
    if summary["empty_name"]:
        lines.append(f"  items with an empty name field (prompted from their other fields): {summary['empty_name']}")
    if summary["empty_metadata"]:
        lines.append(f"  items without metadata (prompt has no attribute clause): {summary['empty_metadata']}")
    if summary["empty_archetypes"]:
        lines.append(f"  items whose archetype stayed empty after a retry: {len(summary['empty_archetypes'])} "
                     f"({_examples(summary['empty_archetypes'])})")
    for fit in summary.get("pca", []):
        lines.append(f"  PCA {fit['view']}: {fit['components']} components keep {fit['explained_variance']:.1%} of the variance")
    for key in ("itememb", "archetype", "raw_vectors", "work_dir"):
        if key in summary:
            lines.append(f"  {key}: {summary[key]}")
    return "\n".join(lines)
