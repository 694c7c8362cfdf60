"""Archetype throughput: our pipeline vs a plain batch-1 `generate(output_hidden_states=True)` loop.

    python benchmarks/bench_archetype.py --dataset=ml-100k --items=64 --max_new_tokens=64
    python benchmarks/bench_archetype.py --dataset=amazon-office --data_path=../shared/data/amazon-office

All take the first N items of the dataset (same prompts, same model, same generation settings) and
run in separate processes: the plain loop, our pipeline with the states kept while generating (`ours`,
the default, with the cached prompt beginning) and as it was before both (`ours-tf`: whole prompts,
`states_from: teacher_forced`, a second forward pass), and with
`--prefill` the prompt's view alone (`archetype_views: prefill`, no generation); each reports items/s, generated tokens/s and peak RSS. The plain loop
pools the hidden states that `generate` returns and keeps them in memory, as a first implementation
would. `--sizes=32,128` runs our pipeline at two catalogue sizes to show that its memory stays flat.
Run by hand; the numbers go in the closing note.
"""
import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def subset_dataset(settings, n_items, folder):
    """A copy of the dataset restricted to the interactions of its first `n_items` items."""
    from recbole_genair.archetype.items import interacted_item_ids

    name = settings["dataset"]
    src = Path(settings["data_path"])
    keep = set(interacted_item_ids(src / f"{name}.inter", settings["item_id_field"])[:n_items])
    folder.mkdir(parents=True, exist_ok=True)
    with open(src / f"{name}.inter", encoding="utf-8") as f, open(folder / f"{name}.inter", "w", encoding="utf-8") as g:
        header = f.readline()
        g.write(header)
        col = [c.split(":")[0] for c in header.rstrip("\n").split("\t")].index(settings["item_id_field"])
        for line in f:
            if line.rstrip("\n").split("\t")[col] in keep:
                g.write(line)
    shutil.copy(src / f"{name}.item", folder / f"{name}.item")
    return folder


def plain_loop(settings):
    """Batch 1, generate with output_hidden_states, pool prefill and decoding states in memory."""
    import torch

    from recbole_genair.archetype.backends import load_llm, prompt_token_ids
    from recbole_genair.archetype.pipeline import make_prompts

    start = time.perf_counter()  # both timers include loading the model
    table, prompts, *_ = make_prompts(settings)
    model, tokenizer, device = load_llm(settings)
    pooled, tokens = [], 0
    for item in table.ids:
        ids = torch.tensor([prompt_token_ids(tokenizer, prompts[item])], device=device)
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=settings["max_new_tokens"],
                do_sample=False, repetition_penalty=settings["repetition_penalty"], pad_token_id=tokenizer.pad_token_id,
                output_hidden_states=True, return_dict_in_generate=True,
            )
        prefill = out.hidden_states[0][-1][0].mean(0)
        steps = [h[-1][0, -1] for h in out.hidden_states[1:]]
        decoding = torch.stack(steps).mean(0) if steps else prefill
        pooled.append(torch.stack([prefill, decoding]).cpu())
        tokens += out.sequences.size(1) - ids.size(1)
    return len(table.ids), tokens, time.perf_counter() - start


def ours(settings):
    from recbole_genair.archetype.pipeline import run_archetype

    start = time.perf_counter()
    summary = run_archetype(settings)
    return summary["items"], summary["archetype_tokens"], time.perf_counter() - start


def child(kind, settings):
    if kind == "ours-tf":  # the earlier path: whole prompts, then a second, teacher-forced pass for the states
        settings = {**settings, "states_from": "teacher_forced", "prefix_cache": False}
    if kind == "prefill":  # the prompt's view alone: no generation
        settings = {**settings, "archetype_views": "prefill"}
    items, tokens, seconds = (plain_loop if kind == "plain" else ours)(settings)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"items": items, "tokens": tokens, "seconds": seconds, "peak_gb": peak_gb}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--sizes", default=None, help="extra catalogue sizes for our pipeline's memory, e.g. 32,128")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--llm_model", default="smollm2")
    parser.add_argument("--prefill", action="store_true", help="also time archetype_views: prefill (no generation)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    from recbole_genair.archetype.settings import load_settings

    def settings_for(folder):
        return load_settings(args.dataset, config_dict={
            "data_path": str(folder) if folder else args.data_path, "llm_model": args.llm_model,
            "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "embed_batch_size": args.batch_size,
            "pca_components": 8,
        })

    if args.child:
        child(args.child[0], settings_for(args.child[1]))
        return
    base = settings_for(None)
    with tempfile.TemporaryDirectory() as tmp:
        sizes = [args.items] + [int(s) for s in (args.sizes or "").split(",") if s]
        results = {}
        runs = [("plain", args.items), ("ours-tf", args.items)] + [("ours", n) for n in sizes]
        runs += [("prefill", args.items)] if args.prefill else []
        for kind, n in runs:
            folder = subset_dataset(base, n, Path(tmp) / f"{kind}-{n}")
            out = subprocess.run([sys.executable, __file__, f"--dataset={args.dataset}", f"--llm_model={args.llm_model}",
                                  f"--max_new_tokens={args.max_new_tokens}", f"--batch_size={args.batch_size}",
                                  "--child", kind, str(folder)], capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-3000:])
                return
            r = results[(kind, n)] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{kind:7s} {r['items']:5d} items  {r['items'] / r['seconds']:6.2f} items/s  "
                  f"{r['tokens'] / r['seconds']:7.1f} gen tokens/s  peak {r['peak_gb']:.2f} GB", flush=True)
        def rate(r):
            return r["items"] / r["seconds"]

        plain = results[("plain", args.items)]
        for kind in ("ours-tf", "ours") + (("prefill",) if args.prefill else ()):
            print(f"speed-up (items/s, {kind} / plain loop): {rate(results[(kind, args.items)]) / rate(plain):.2f}x "
                  f"on {args.items} items, max_new_tokens={args.max_new_tokens}, batch {args.batch_size}, model {args.llm_model}")


if __name__ == "__main__":
    main()
