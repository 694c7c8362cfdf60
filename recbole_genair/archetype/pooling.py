"""Prefill and decoding embeddings from one teacher-forced pass (GenAIR eq. 6).

For a causal LM the last-layer state of a token depends only on the tokens before it, so a forward
pass over prompt + archetype gives the states that generation computed, plus the state of the last
generated token, which generation never feeds back (the authors' code loses it). Running it apart
from generation lets any engine write the texts.
"""
import numpy as np
import torch


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
