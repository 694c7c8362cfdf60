"""Prefill and decoding embeddings (GenAIR eq. 6): from the generation pass, or one teacher-forced pass.

For a causal LM the last-layer state of a token depends only on the tokens before it, so the states
that generation computes are those of a forward pass over prompt + archetype (within float tolerance:
cached keys, left padding). `GenerationStates` records them while the local model generates, plus one
step for the last generated token, which generation never feeds back (the authors' code loses it).
`pooled_views` is the teacher-forced pass, for texts written elsewhere (an API server) or before a
restart.
"""
import inspect

import numpy as np
import torch


def cache_argument(function):
    """The keyword under which this transformers version passes a KV cache (`cache` since 5.x)."""
    return "cache" if "cache" in inspect.signature(function).parameters else "past_key_values"


def model_output_cache(output):
    """The KV cache of a model or generate output, under this transformers version's name."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def last_layer_states(model, sequences, pad_id, device):
    """Final-layer hidden states (after the final norm) of each id sequence, as `len x hidden` tensors.

    Right padding: real tokens never attend to padding and keep their natural positions. Only the
    base model runs, so no vocabulary-sized logits are computed.
    """
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    with torch.inference_mode():
        out = model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device))
    states = out.last_hidden_state.float().cpu()
    return [states[row, : len(seq)] for row, seq in enumerate(sequences)]


def pooled_views(model, prompt_ids, archetype_ids, pad_id, device):
    """`batch x 2 x hidden` float32: [mean over prompt tokens, mean over archetype tokens] (eq. 6)."""
    sequences = [p + a for p, a in zip(prompt_ids, archetype_ids)]
    states = last_layer_states(model, sequences, pad_id, device)
    pooled = np.empty((len(sequences), 2, states[0].size(1)), dtype=np.float32)
    for row, (p, s) in enumerate(zip(prompt_ids, states)):
        pooled[row, 0] = s[: len(p)].mean(0).numpy()
        pooled[row, 1] = s[len(p):].mean(0).numpy()
    return pooled


def prefill_views(model, prompt_ids, pad_id, device):
    """`batch x 2 x hidden` float32: [mean over prompt tokens, zeros] (`archetype_views: prefill`, no archetype)."""
    states = last_layer_states(model, prompt_ids, pad_id, device)
    pooled = np.zeros((len(prompt_ids), 2, states[0].size(1)), dtype=np.float32)
    for row, s in enumerate(states):
        pooled[row, 0] = s.mean(0).numpy()
    return pooled


class GenerationStates:
    """Record the last-layer states of a local model's `generate` call and pool them per row.

    Used as a context manager around one `generate(..., return_dict_in_generate=True)` call: a forward hook
    on the base model keeps its `last_hidden_state` at every step (the prompt at the first, then one
    generated token per step), nothing else of the per-step outputs.
    """

    def __init__(self, model, prefix_states=None):
        # prefix_states: the states of a prompt beginning run once and cached for every row (see `generate`)
        self.model, self.prefix_states, self.steps, self._handle = model, prefix_states, [], None

    def __enter__(self):
        self._handle = self.model.base_model.register_forward_hook(
            lambda module, args, output: self.steps.append(output[0] if isinstance(output, tuple) else output.last_hidden_state))
        return self

    def __exit__(self, *exc):
        self._handle.remove()

    def pooled(self, out, prompt_mask, kept_lengths):
        """`batch x 2 x hidden` float32: [mean over each prompt's tokens, mean over its first `kept_lengths` generated
        tokens] from the recorded steps of `out` (left-padded prompts with attention mask `prompt_mask`)."""
        generated = out.sequences[:, prompt_mask.size(1):]
        fed = [s[:, -1] for s in self.steps[1:]]  # token k's state, fed at step k (k = 1 .. G - 1)
        if max(kept_lengths) > len(fed):  # some row keeps the last generated token: one more step with the cache
            base = self.model.base_model
            mask = torch.cat([prompt_mask, torch.ones_like(generated)], dim=1)
            position = mask.sum(dim=1, keepdim=True) - 1
            with torch.inference_mode():
                last = base(input_ids=generated[:, -1:], attention_mask=mask, position_ids=position, use_cache=True,
                            **{cache_argument(base.forward): model_output_cache(out)})
            fed.append(last.last_hidden_state[:, -1])
        decoding = torch.stack(fed, dim=1).float().cpu()  # batch x G x hidden
        prefill = self.steps[0].float().cpu()  # the prompt columns after the cached prefix, if any
        n_prefix = 0 if self.prefix_states is None else self.prefix_states.size(0)
        prefix_sum = 0.0 if self.prefix_states is None else self.prefix_states.float().cpu().sum(0)
        lengths = prompt_mask.sum(dim=1).tolist()
        pooled = np.empty((len(kept_lengths), 2, prefill.size(-1)), dtype=np.float32)
        for row, (n_prompt, n_kept) in enumerate(zip(lengths, kept_lengths)):
            rest = prefill[row, prefill.size(1) - (n_prompt - n_prefix):]
            pooled[row, 0] = ((prefix_sum + rest.sum(0)) / n_prompt).numpy()
            pooled[row, 1] = decoding[row, :n_kept].mean(0).numpy()
        return pooled
