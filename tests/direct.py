"""Independent computations the tests compare the library against."""

import torch


def option_logprob(mllm, enc, option: str) -> float:
    """log p(option | prompt) by one full forward of prompt + option (no cache, no batching).

    `enc`: the processor's encoding of one prompt (input_ids and pixel_values)."""
    ids = mllm.tokenizer(option, add_special_tokens=False)["input_ids"]
    full = torch.cat([enc["input_ids"], torch.tensor([ids])], 1)
    with torch.no_grad():
        logp = mllm.model(input_ids=full, attention_mask=torch.ones_like(full),
                          pixel_values=enc["pixel_values"]).logits[0].double().log_softmax(-1)
    n = enc["input_ids"].shape[1]
    return sum(logp[n + k - 1, t].item() for k, t in enumerate(ids))
