"""Per-task parts picked at inference: the router of DISCO, HiDe, CL-MoE and ModalPrompt.

An item's routing feature is computed by the model without its adapters: the vision
tower's pooled image feature and the mean input embedding of the question, each
L2-normalised, concatenated. Each task keeps the running mean of its training items'
features; an item goes to the task whose mean is most cosine-similar. A routed method
answers through its router only inside its `inference` context (`Routed.inference`):
the MLLM then groups a batch's items by the task the router picks and runs each group
inside the method's `routed(task)` context.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from retain.methods.base import TaskContext
from retain.methods.lora import base_llava
from retain.methods.per_task_lora import PerTaskLoRA
from retain.progress import bar

FEATURE_BATCH = 32
"""items per forward when computing a task's routing features"""


@torch.no_grad()
def item_features(mllm, images, questions: list[str]) -> torch.Tensor:
    """(n, d) routing features of (image or None, question) items, adapters off: the vision tower's
    pooled image feature (`Profile.routing_feature` of the model's family) and the question's mean
    input embedding, each L2-normalised."""
    model = base_llava(mllm)
    disable = mllm.model.disable_adapter() if hasattr(mllm.model, "disable_adapter") else contextlib.nullcontext()
    with disable:
        ids = mllm.tokenizer(list(questions), add_special_tokens=False, padding=True, return_tensors="pt")
        emb = model.get_input_embeddings()(ids["input_ids"].to(mllm.device))
        mask = ids["attention_mask"].to(mllm.device).unsqueeze(-1).to(emb.dtype)
        text = F.normalize((emb * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)
        profile = mllm.profile  # the family's vision tower, its pooled feature and that feature's width
        vision = getattr(model.model if hasattr(model, "model") else model, profile.vision_tower)
        width = getattr(vision.config, profile.width)
        img = torch.zeros(len(questions), width, device=mllm.device, dtype=text.dtype)
        present = [i for i, im in enumerate(images) if im is not None] if images is not None else []
        if present:
            from retain.models.mllm import to_pil

            pixels = mllm.processor.image_processor([to_pil(images[i]) for i in present], return_tensors="pt",
                                                    **profile.routing_pixels)
            img[present] = F.normalize(profile.routing_feature(vision, pixels).to(text.dtype), dim=-1)
    return torch.cat([img, text], dim=-1).float()


class PrototypeRouter:
    """Running-mean feature per task; `assign` picks the nearest by cosine similarity and
    `activate(task)` is the context that answers with that task's parts."""

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



def accumulate_prototype(router: PrototypeRouter, mllm, split, task: int) -> None:
    """Add the routing features of every item of `split` to task `task`'s running mean."""
    for s in bar(range(0, len(split), FEATURE_BATCH), desc=f"routing features of task {task + 1}"):
        images = split.images[s:s + FEATURE_BATCH]
        router.update(task, item_features(mllm, images, split.questions[s:s + FEATURE_BATCH]))


class Routed:
    """Mixin of the routed methods: a `PrototypeRouter` over the method's `routed(task)`
    context, fed each task's training items before the task, installed on the MLLM only
    for the duration of `inference`."""

    prefix: str = ""
    """text put before every question while routed (ModalPrompt's prompt tokens)"""

    def setup_router(self, mllm) -> None:
        self.mllm = mllm
        self.router = PrototypeRouter(self.routed)

    def routed(self, task: int) -> contextlib.AbstractContextManager:
        """The context in which the model answers as task `task`'s parts make it."""
        raise NotImplementedError

    def add_prototype(self, ctx: TaskContext) -> None:
        if ctx.index not in self.router.counts:
            accumulate_prototype(self.router, self.mllm, ctx.train, ctx.index)

    def inference(self, model) -> contextlib.AbstractContextManager:
        return model.routing(self.router, self.prefix)


class RoutedLoRA(Routed, PerTaskLoRA):
    """A per-task LoRA method whose router picks the adapters for each item at inference."""

    def setup(self, model) -> None:
        super().setup(model)
        self.setup_router(model)

    def before_task(self, ctx: TaskContext) -> None:
        super().before_task(ctx)
        self.add_prototype(ctx)

    def configure(self, task: int) -> None:
        """Activate the adapters that answer an item routed to `task`."""
        self.mllm.model.base_model.set_adapter([self.adapters[task]])

    @contextlib.contextmanager
    def routed(self, task: int):
        was = self.mllm.model.base_model.active_adapters
        flags = [(p, p.requires_grad) for p in self.mllm.parameters()]
        self.configure(task)
        try:
            yield
        finally:
            self.restore(was)
            for p, flag in flags:  # set_adapter marks adapters trainable; the trainer decides that
                p.requires_grad_(flag)

    def restore(self, active) -> None:
        self.mllm.model.base_model.set_adapter(list(active))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**super().state_dict(), **self.router.state_dict()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.router.load_state_dict(state)
