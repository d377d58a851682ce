"""Per-task adapters picked at inference: the router that DISCO and HiDe install on an MLLM.

An item's routing feature is computed by the model without its adapters: the vision
tower's pooled image feature and the mean input embedding of the question, each
L2-normalised, concatenated. Each task keeps the running mean of its training items'
features; an item goes to the task whose mean is most cosine-similar.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def base_llava(mllm):
    """The underlying Hugging Face model, under any PEFT wrapper."""
    m = mllm.model
    return m.get_base_model() if hasattr(m, "get_base_model") else m


@torch.no_grad()
def item_features(mllm, images, questions: list[str]) -> torch.Tensor:
    """(n, d) routing features of (image or None, question) items, adapters off."""
    model = base_llava(mllm)
    disable = mllm.model.disable_adapter() if hasattr(mllm.model, "disable_adapter") else contextlib.nullcontext()
    with disable:
        ids = mllm.tokenizer(list(questions), add_special_tokens=False, padding=True, return_tensors="pt")
        emb = model.get_input_embeddings()(ids["input_ids"].to(mllm.device))
        mask = ids["attention_mask"].to(mllm.device).unsqueeze(-1).to(emb.dtype)
        text = F.normalize((emb * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)
        vision = model.model.vision_tower if hasattr(model, "model") else model.vision_tower
        width = vision.config.hidden_size
        img = torch.zeros(len(questions), width, device=mllm.device, dtype=text.dtype)
        present = [i for i, im in enumerate(images) if im is not None] if images is not None else []
        if present:
            from retain.models.mllm import to_pil

            pixels = mllm.processor.image_processor([to_pil(images[i]) for i in present], return_tensors="pt")
            out = vision(pixels["pixel_values"].to(mllm.device, vision.dtype))
            img[present] = F.normalize(out.pooler_output.to(text.dtype), dim=-1)
    return torch.cat([img, text], dim=-1).float()


class PrototypeRouter:
    """Running-mean feature per task; `assign` picks the nearest by cosine similarity."""

    def __init__(self, activate):
        self.sums: dict[int, torch.Tensor] = {}
        self.counts: dict[int, int] = {}
        self._activate = activate  # task index -> context manager that switches the adapters

    def update(self, task: int, features: torch.Tensor) -> None:
        f = features.detach().float().cpu()
        self.sums[task] = self.sums.get(task, torch.zeros(f.shape[1])) + f.sum(0)
        self.counts[task] = self.counts.get(task, 0) + len(f)

    def ready(self) -> bool:
        """False before the first task: nothing to route to, the model answers as it is."""
        return bool(self.sums)

    def prototypes(self) -> tuple[list[int], torch.Tensor]:
        tasks = sorted(self.sums)
        return tasks, torch.stack([self.sums[t] / self.counts[t] for t in tasks])

    def assign_features(self, features: torch.Tensor) -> list[int]:
        tasks, protos = self.prototypes()
        sims = F.normalize(features.float().cpu(), dim=-1) @ F.normalize(protos, dim=-1).T
        return [tasks[i] for i in sims.argmax(1).tolist()]

    def assign(self, mllm, images, questions) -> list[int]:
        return self.assign_features(item_features(mllm, images, questions))

    def activate(self, task: int):
        return self._activate(task)

    def state_dict(self) -> dict[str, torch.Tensor]:
        tasks = sorted(self.sums)
        if not tasks:
            return {}
        return {"router.tasks": torch.tensor(tasks), "router.sums": torch.stack([self.sums[t] for t in tasks]),
                "router.counts": torch.tensor([self.counts[t] for t in tasks])}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if "router.tasks" not in state:
            return
        for t, s, c in zip(state["router.tasks"].tolist(), state["router.sums"], state["router.counts"].tolist()):
            self.sums[t], self.counts[t] = s.clone(), c


def lora_layers(model):
    """(module name, PEFT LoRA layer) pairs of a PEFT-wrapped model."""
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def delta_weight(layer, adapter: str) -> torch.Tensor:
    """The update a LoRA adapter adds to its layer's weight: scaling * B A."""
    return layer.scaling[adapter] * (layer.lora_B[adapter].weight @ layer.lora_A[adapter].weight)
