"""The memory (and compute) a training run needs, estimated before it starts.

Per process, in bytes (docs/guide/gpu.md has the derivation and the measurements):

- weights: every parameter in its own dtype (exact). FSDP and ZeRO-3 divide them over the
  processes and add the layers being gathered (two, with prefetch); FSDP under mixed
  precision keeps what trains in fp32 (accelerate upcasts it); DeepSpeed under bf16/fp16
  casts the model to that dtype.
- gradients: one per trained parameter, in its dtype (exact). DDP keeps a second copy in its
  communication buckets; ZeRO-2/3 and FSDP divide them.
- optimizer: AdamW's two moments per trained parameter in that parameter's dtype, plus a
  4-byte step counter per parameter tensor, as `torch.optim.AdamW` keeps them (exact after
  the first step). DeepSpeed keeps the moments and fp32 master weights of the trained
  parameters (under bf16/fp16; in autocast runs the fp32 weights are the master copy);
  ZeRO-1+ and FSDP divide them; offloading moves them to host memory.
- activations, an estimate: what autograd saves for the backward pass of one micro-batch of
  b items of s tokens, per transformer layer b*s*(c_h*h + c_i*i) elements (Llama-style gated
  MLP: c_h=10, c_i=4; CLIP/BERT-style MLP: c_h=8, c_i=3; a layer whose weights are frozen but
  the gradient passes through: 7, 3 and 6, 2; measured with saved-tensor hooks), plus
  b*heads*s^2 with eager attention (SDPA and flash attention keep no score matrix), plus what
  trained LoRA adapters keep (lora_A's output, and with dropout the dropped input and its mask),
  plus the LM head's b*s*(3h) and fp32 log-softmax b*s*V*4 bytes and the logits it returns
  (b*s*V, compute dtype). With gradient checkpointing a layer keeps only its input (b*s*h)
  and one layer's activations are rebuilt at a time. Only stacks the gradient flows through
  count (a frozen vision tower in front of nothing trained saves nothing).
- compute: 2 FLOPs per weight per token forward, the attention's 4*s^2*h per layer, a backward
  pass of about the same again plus 2 per trained weight and token, and one more forward
  under gradient checkpointing.

`estimate` computes it for a model, its trained parameters and a layout; `layout_of` reads
the layout from a running Accelerator, `layout_from_file` from an accelerate config file;
`skeleton` builds a model from its config alone on the meta device (no weights), for
`retain estimate`; `check_fits` refuses a run that cannot fit the device.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from retain.errors import RetainError

GiB = 2**30
GATED_MLP = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo", "granite")
"""model types whose MLP is gate/up/down (SwiGLU); the others are fc1/act/fc2"""
LAYER_ELEMENTS = {(True, False): (10, 4), (True, True): (7, 3), (False, False): (8, 3), (False, True): (6, 2)}
"""(gated MLP, frozen weights) -> (c_h, c_i): a layer saves c_h*hidden + c_i*intermediate elements per
token, measured with saved-tensor hooks on transformers' Llama and CLIP layers (SDPA attention)"""


@dataclass(frozen=True)
class Layout:
    """How a run is spread over processes: accelerate's distributed setup in retain's words."""

    processes: int = 1
    strategy: str = "single"
    """single, ddp, fsdp or deepspeed"""
    stage: int = 0
    """DeepSpeed's ZeRO stage; FSDP: 3 (FULL_SHARD, resharded after forward) or 2 (kept until backward)"""
    mixed_precision: str = "no"
    offload_optimizer: bool = False
    offload_params: bool = False

    def describe(self) -> str:
        where = {"single": "1 process", "ddp": f"DDP over {self.processes} processes",
                 "fsdp": f"FSDP ({'full shard' if self.stage == 3 else 'shard grad/optimizer'}) over "
                         f"{self.processes} processes",
                 "deepspeed": f"DeepSpeed ZeRO-{self.stage} over {self.processes} processes"}[self.strategy]
        offload = [k for k, v in (("optimizer", self.offload_optimizer), ("parameters", self.offload_params)) if v]
        return where + (f", {' and '.join(offload)} offloaded to CPU" if offload else "") + \
            f", mixed precision {self.mixed_precision}"


@dataclass(frozen=True)
class Stack:
    """A stack of transformer layers and what one training item feeds it."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    tokens: int
    """tokens per item"""
    gated: bool = False
    """gate/up/down MLP (Llama) rather than fc1/fc2 (CLIP, BERT)"""
    eager: bool = False
    """eager attention, which keeps the (heads, s, s) probabilities"""
    vocab: int = 0
    """> 0: the stack ends in an LM head whose logits enter the loss"""
    trains: bool = True
    """the gradient flows through it (something in it or before it trains)"""
    frozen: bool = False
    """the gradient flows through it but none of its weights train: its linear layers keep no inputs"""

    @classmethod
    def from_config(cls, name: str, config, tokens: int, trains: bool, vocab: int = 0, frozen: bool = False) -> "Stack":
        """A stack from a Hugging Face config, whichever names it uses: layers `num_hidden_layers`
        or `depth` (Qwen2-VL's vision tower), width `embed_dim` where that is the tower's own
        width (Qwen2-VL, whose `hidden_size` is the LM's) else `hidden_size`, MLP width
        `intermediate_size` or width x `mlp_ratio`, heads `num_attention_heads` or `num_heads`."""
        kind = getattr(config, "model_type", "")
        hidden = int(getattr(config, "embed_dim", None) or config.hidden_size)
        intermediate = getattr(config, "intermediate_size", None) or hidden * float(getattr(config, "mlp_ratio", 4))
        layers = getattr(config, "num_hidden_layers", None) or config.depth
        heads = getattr(config, "num_attention_heads", None) or config.num_heads
        return cls(name, int(layers), hidden, int(intermediate), int(heads), int(tokens), gated=kind in GATED_MLP,
                   eager=getattr(config, "_attn_implementation", None) == "eager", vocab=int(vocab), trains=trains,
                   frozen=frozen)

    def layer_elements(self) -> int:
        """Elements one layer saves per token (see the module docstring)."""
        c_h, c_i = LAYER_ELEMENTS[(self.gated, self.frozen)]
        return c_h * self.hidden + c_i * self.intermediate + (self.heads * self.tokens if self.eager else 0)

    def layer_bytes(self, batch: int, element: int, checkpointing: bool) -> int:
        """What the layers keep for one micro-batch: all their activations, or with gradient
        checkpointing each layer's input and one layer's activations being rebuilt."""
        if not self.trains:
            return 0
        s, layer = batch * self.tokens, self.layer_elements()
        return (self.layers * s * self.hidden + s * layer if checkpointing else self.layers * s * layer) * element

    def head_bytes(self, batch: int, element: int) -> int:
        """The LM head's: its input and final norm (3h), the logits it returns (compute dtype)
        and the fp32 log-softmax of the loss."""
        if not (self.trains and self.vocab):
            return 0
        s = batch * self.tokens
        return s * (3 * self.hidden + self.vocab) * element + s * self.vocab * 4

    def forward_flops(self) -> int:
        """FLOPs of one item's forward pass through the stack."""
        h, i = self.hidden, self.intermediate
        weights = 4 * h * h + (3 if self.gated else 2) * h * i
        return self.tokens * (2 * self.layers * weights + 2 * self.vocab * h) + 4 * self.layers * self.tokens ** 2 * h


@dataclass
class Estimate:
    """What one training run needs; the `*_bytes` fields are per process, after sharding."""

    layout: Layout
    total_parameters: int
    trained_parameters: int
    weights_by_dtype: dict[str, int]
    """the whole model's weights, bytes per dtype, as loaded"""
    micro_batch: int
    gradient_accumulation: int
    gradient_checkpointing: bool
    stacks: list[Stack]
    weight_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    master_bytes: int
    activation_bytes: int
    activation_parts: dict[str, int]
    """activation_bytes by where they are kept"""
    host_bytes: int
    """offloaded to CPU memory (not counted in `device_bytes`)"""
    flops_per_step: float
    """all processes together, one optimizer step"""
    tokens_per_step: int
    notes: list[str] = field(default_factory=list)

    @property
    def device_bytes(self) -> int:
        return self.weight_bytes + self.gradient_bytes + self.optimizer_bytes + self.master_bytes + self.activation_bytes

    def to_dict(self) -> dict:
        out = asdict(self)
        out["device_bytes"] = self.device_bytes
        out["layout"]["description"] = self.layout.describe()
        return out

    def lines(self, tflops: float | None = None) -> list[str]:
        """The estimate as text; with `tflops` (sustained TFLOP/s per process), the time per step too."""
        n = self.layout.processes
        share = f"{100 * self.trained_parameters / max(self.total_parameters, 1):.2f}%"
        by_dtype = ", ".join(f"{d} {gib(b)}" for d, b in sorted(self.weights_by_dtype.items()))
        tokens = ", ".join(f"{s.tokens} {s.name} tokens" for s in self.stacks if s.trains) or "nothing trains"
        out = [f"memory estimate per process ({self.layout.describe()}):",
               f"  parameters    {count(self.total_parameters)} total, {count(self.trained_parameters)} trained ({share})",
               f"  weights       {gib(self.weight_bytes)} (the model: {by_dtype})",
               f"  gradients     {gib(self.gradient_bytes)}",
               f"  optimizer     {gib(self.optimizer_bytes)} (AdamW moments)",
               f"  master copy   {gib(self.master_bytes)}",
               f"  activations   {gib(self.activation_bytes)} (estimate: micro-batch of {self.micro_batch} items of "
               f"{tokens}, gradient checkpointing {'on' if self.gradient_checkpointing else 'off'})",
               f"  total         {gib(self.device_bytes)} on the device"
               + (f", {gib(self.host_bytes)} offloaded to CPU memory" if self.host_bytes else "")]
        line = (f"  compute       {self.flops_per_step / 1e12:.1f} TFLOP per optimizer step ({self.tokens_per_step} "
                f"tokens over {n} process{'es' if n > 1 else ''}, {self.gradient_accumulation} micro-batch"
                f"{'es' if self.gradient_accumulation > 1 else ''} each)")
        if tflops:
            line += f"; at {tflops:g} TFLOP/s per process about {self.flops_per_step / n / (tflops * 1e12):.2f} s/step"
        return out + [line] + [f"  note: {x}" for x in self.notes]


def gib(b: float) -> str:
    return f"{b / GiB:.2f} GiB"


def count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def _unique(params) -> list[torch.nn.Parameter]:
    return list({id(p): p for p in params}.values())


def _bytes(p: torch.Tensor) -> int:
    return p.numel() * p.element_size()


def optimizer_bytes(trained) -> int:
    """Bytes `torch.optim.AdamW` holds once it has stepped: exp_avg and exp_avg_sq like each
    parameter, and a float32 scalar `step` per parameter tensor."""
    return sum(2 * _bytes(p) + 4 for p in _unique(trained))


def largest_layer(model: torch.nn.Module) -> int:
    """Parameters of the largest entry of any ModuleList (a transformer layer: what FSDP or
    ZeRO-3 gathers at a time)."""
    sizes = [sum(p.numel() for p in m.parameters()) for lst in model.modules() if isinstance(lst, torch.nn.ModuleList)
             for m in lst]
    return max(sizes, default=0)


def lora_elements(model: torch.nn.Module, trained) -> tuple[int, int]:
    """Per token, what trained LoRA adapters (PEFT) save beyond their layer: the output of
    lora_A (r elements) and, with dropout, the dropped input (in_features elements) and its
    mask (in_features bytes). Returns (elements, mask bytes)."""
    ids = {id(p) for p in trained}
    elements = masks = 0
    for m in model.modules():
        if not (hasattr(m, "lora_A") and hasattr(m, "lora_dropout") and isinstance(getattr(m, "r", None), dict)):
            continue
        for name, a in m.lora_A.items():
            if not any(id(p) in ids for p in a.parameters()):
                continue
            elements += int(m.r[name])
            drop = m.lora_dropout[name]
            if isinstance(drop, torch.nn.Dropout) and drop.p > 0:
                elements += int(m.in_features)
                masks += int(m.in_features)
    return elements, masks


def estimate(model: torch.nn.Module, trained, stacks: list[Stack], train, layout: Layout) -> Estimate:
    """The memory and compute of training `trained` (parameters of `model`) with `train`
    (a TrainConfig) laid out as `layout`; `stacks` say what a training item runs through."""
    params = _unique(model.parameters())
    trained = _unique(trained)
    total = sum(p.numel() for p in params)
    n_trained = sum(p.numel() for p in trained)
    by_dtype: dict[str, int] = {}
    for p in params:
        by_dtype[_dtype(p)] = by_dtype.get(_dtype(p), 0) + _bytes(p)
    weights, grads, optim = sum(by_dtype.values()), sum(_bytes(p) for p in trained), optimizer_bytes(trained)
    master = 0
    half = layout.mixed_precision in ("bf16", "fp16")
    n, k = max(layout.processes, 1), max(int(train.gradient_accumulation), 1)
    micro = max(1, int(train.batch_size) // (n * k))
    largest = max(by_dtype, key=by_dtype.get) if by_dtype else "float32"
    element = 2 if half else torch.empty(0, dtype=getattr(torch, largest)).element_size()
    notes = []
    if layout.strategy == "deepspeed":
        if half:  # the engine casts the model to the compute dtype and keeps fp32 masters of what trains
            weights, grads, master = 2 * total, 2 * n_trained, 4 * n_trained
        optim = 8 * n_trained
    elif layout.strategy == "fsdp" and half:  # accelerate upcasts what trains to fp32 before sharding it
        ids = {id(p) for p in trained}
        weights = sum(p.numel() * (4 if id(p) in ids else p.element_size()) for p in params)
        grads, optim = 4 * n_trained, 8 * n_trained + 4 * len(trained)
    host = 0
    if layout.strategy == "ddp":
        grads *= 2  # DDP's gradient buckets
    if layout.strategy in ("fsdp", "deepspeed"):
        sharded = layout.strategy == "fsdp" or layout.stage >= 3
        gathered = 2 * largest_layer(model) * element if layout.stage >= 3 else 0
        if layout.strategy == "fsdp" and layout.stage < 3:
            gathered = total * element  # kept gathered from forward to backward
        if layout.stage >= 1 or layout.strategy == "fsdp":
            optim, master = optim // n, master // n
        if layout.stage >= 2 or layout.strategy == "fsdp":
            grads //= n
        if sharded:
            weights //= n
        if layout.offload_optimizer or (layout.strategy == "fsdp" and layout.offload_params):
            host += optim + master
            optim = master = 0
        if layout.offload_params:
            host += weights + (grads if layout.strategy == "fsdp" else 0)
            weights, grads = 0, (0 if layout.strategy == "fsdp" else grads)
        weights += gathered
    checkpointing = bool(train.gradient_checkpointing)
    parts = {f"{s.name} layers": s.layer_bytes(micro, element, checkpointing) for s in stacks}
    parts.update({f"{s.name} head": s.head_bytes(micro, element) for s in stacks if s.vocab})
    lm = next((s for s in stacks if s.vocab), stacks[-1] if stacks else None)  # where the adapters are
    if lm is not None and lm.trains and not checkpointing:
        lora, masks = lora_elements(model, trained)
        parts["LoRA adapters"] = micro * lm.tokens * (lora * element + masks)
    parts = {k: int(v) for k, v in parts.items() if v}
    activations = sum(parts.values())
    forward = sum(s.forward_flops() for s in stacks if s.trains) or 1
    frozen = sum(s.forward_flops() for s in stacks if not s.trains)
    fraction = n_trained / max(total, 1)
    per_item = frozen + forward * (2 + fraction + (1 if train.gradient_checkpointing else 0))
    flops = per_item * micro * k * n
    tokens = sum(s.tokens for s in stacks if s.vocab) or (stacks[0].tokens if stacks else 0)
    if not any(s.trains for s in stacks):
        notes.append("no stack saves activations: nothing the loss depends on trains")
    return Estimate(layout, total, n_trained, by_dtype, micro, k, bool(train.gradient_checkpointing), stacks,
                    int(weights), int(grads), int(optim), int(master), int(activations), parts, int(host), float(flops),
                    int(tokens * micro * k * n), notes)


# ---- the model's stacks ----------------------------------------------------------------------


ASSUMED_IMAGE_PX = 448
"""the image side assumed where the vision tower takes any resolution (Qwen2-VL: no image_size)"""


def vision_patches(v) -> int:
    """Patches one image (one view) gives a vision config: (image size / patch size)^2, sizes
    given as one number or as (height, width); `ASSUMED_IMAGE_PX` where the tower has no size."""
    size = getattr(v, "image_size", None) or ASSUMED_IMAGE_PX
    patch = v.patch_size
    sizes = size if isinstance(size, (list, tuple)) else (size, size)
    patches = patch if isinstance(patch, (list, tuple)) else (patch, patch)
    return (int(sizes[0]) // int(patches[0])) * (int(sizes[1]) // int(patches[1]))


def image_tokens(config) -> int:
    """The tokens one image becomes in the LM (an estimate where the count depends on the image):
    the vision tower's patches, merged as the family merges them (Qwen2-VL's spatial merge,
    InternVL's pixel shuffle, Idefics3's scale factor), plus LLaVA's CLS token when
    `vision_feature_select_strategy` is full; LLaVA-NeXT's any-resolution tiles are counted
    as its base view and a 2 x 2 grid (5 views)."""
    v = config.vision_config
    patches = vision_patches(v)
    merge = getattr(v, "spatial_merge_size", None)
    if merge:  # Qwen2-VL / Qwen2.5-VL
        return patches // int(merge) ** 2
    if getattr(config, "downsample_ratio", None):  # InternVL
        return int(patches * float(config.downsample_ratio) ** 2)
    if getattr(config, "scale_factor", None):  # Idefics3 / SmolVLM
        return patches // int(config.scale_factor) ** 2
    views = 5 if getattr(config, "image_grid_pinpoints", None) else 1  # LLaVA-NeXT
    return views * (patches + (1 if getattr(config, "vision_feature_select_strategy", "default") == "full" else 0))


def mllm_stacks(config, trained_names: list[str], lm_tokens: int, language_model: str = "language_model",
                vision_tower: str = "vision_tower", projector: tuple[str, ...] = ()) -> list[Stack]:
    """The vision tower and the LM of an MLLM `config` (items of `lm_tokens` tokens, image tokens
    included); the vision tower saves activations only when some of it trains (its projector
    aside: Qwen2-VL's merger lies inside `visual`). `language_model`, `vision_tower` and
    `projector` are the family's module names (`retain.models.mllm.Profile`)."""
    stacks = []
    if getattr(config, "vision_config", None) is not None:
        v = config.vision_config
        vision_trains = any(f"{vision_tower}." in n and not any(p in n for p in projector) for n in trained_names)
        stacks.append(Stack.from_config("image", v, vision_patches(v) + 1, vision_trains))
    text = getattr(config, "text_config", None) or config
    frozen = not any(f"{language_model}." in n or "lm_head" in n for n in trained_names)
    stacks.append(Stack.from_config("LM", text, lm_tokens, bool(trained_names), vocab=int(text.vocab_size),
                                    frozen=frozen))
    return stacks


def dual_encoder_stacks(vision_config, text_config, trained_names: list[str], text_tokens: int = 77) -> list[Stack]:
    """A dual encoder's image tower (and its text tower when that trains, as in FLYP)."""
    v = vision_config
    stacks = [Stack.from_config("image", v, vision_patches(v) + 1,
                                any(".vision." in f".{n}" or "visual_projection" in n for n in trained_names))]
    if text_config is not None and any(".text." in f".{n}" or "text_projection" in n for n in trained_names):
        stacks.append(Stack.from_config("text", text_config, text_tokens, True))
    return stacks


# ---- the layout ------------------------------------------------------------------------------


def layout_of(accelerator) -> Layout:
    """The layout of a running Accelerator."""
    from accelerate.utils import DistributedType

    state, n, mp = accelerator.state, accelerator.num_processes, str(accelerator.mixed_precision)
    if state.distributed_type == DistributedType.FSDP:
        plugin = state.fsdp_plugin
        full = plugin.reshard_after_forward in (True, "FULL_SHARD") or "FULL_SHARD" in str(plugin.reshard_after_forward)
        offload = plugin.cpu_offload  # FSDP2: OffloadPolicy (none) or CPUOffloadPolicy; FSDP1: CPUOffload
        return Layout(n, "fsdp", 3 if full else 2, mp, offload_params=type(offload).__name__ == "CPUOffloadPolicy"
                      or getattr(offload, "offload_params", False) is True)
    if state.distributed_type == DistributedType.DEEPSPEED:
        plugin = state.deepspeed_plugin
        return Layout(n, "deepspeed", int(plugin.zero_stage), mp,
                      offload_optimizer=str(plugin.offload_optimizer_device).lower() not in ("none", "", "null"),
                      offload_params=str(plugin.offload_param_device).lower() not in ("none", "", "null"))
    return Layout(n, "ddp" if n > 1 else "single", 0, mp)


def layout_from_file(path: str | Path | None, processes: int | None = None, mixed_precision: str = "no") -> Layout:
    """The layout an accelerate config file asks for (read by accelerate's own loader);
    `processes` overrides its num_processes (as `accelerate launch --num_processes`). The
    mixed precision is the run's (`train.mixed_precision`, which the engine passes on and
    refuses a launch to contradict)."""
    if path is None:
        n = processes or 1
        return Layout(n, "ddp" if n > 1 else "single", 0, mixed_precision)
    from accelerate.commands.config.config_args import load_config_from_file

    path = Path(path)
    if not path.is_file():
        raise RetainError(f"The accelerate config {path} does not exist (retain ships configs/accelerate/*.yaml).")
    try:
        cfg = load_config_from_file(str(path))
    except (ValueError, TypeError, KeyError) as e:
        raise RetainError(f"accelerate cannot read {path}: {e}") from e
    n = int(processes or cfg.num_processes or 1)
    mp = mixed_precision
    kind = str(cfg.distributed_type).split(".")[-1]
    if kind == "FSDP":
        f = cfg.fsdp_config or {}
        reshard = str(f.get("fsdp_reshard_after_forward", f.get("fsdp_sharding_strategy", "FULL_SHARD"))).upper()
        return Layout(n, "fsdp", 3 if reshard in ("TRUE", "FULL_SHARD", "1") else 2, mp,
                      offload_params=bool(f.get("fsdp_offload_params", False)))
    if kind == "DEEPSPEED":
        d = cfg.deepspeed_config or {}
        stage, opt, par = d.get("zero_stage", 2), d.get("offload_optimizer_device", "none"), d.get("offload_param_device", "none")
        if d.get("deepspeed_config_file"):
            ds_file = Path(d["deepspeed_config_file"])
            if not ds_file.is_file():
                raise RetainError(f"{path} names the DeepSpeed config {ds_file}, which does not exist here (a relative "
                                  "path is read from where you launch: the repository root).")
            ds = json.loads(ds_file.read_text())
            z = ds.get("zero_optimization", {})
            stage = z.get("stage", stage)
            opt = (z.get("offload_optimizer") or {}).get("device", "none")
            par = (z.get("offload_param") or {}).get("device", "none")
        return Layout(n, "deepspeed", int(stage), mp, offload_optimizer=str(opt) != "none",
                      offload_params=str(par) != "none")
    return Layout(n, "ddp" if n > 1 else "single", 0, mp)


# ---- the device ------------------------------------------------------------------------------


def available_ram() -> int:
    """Bytes of RAM available to new allocations (psutil, else /proc/meminfo's MemAvailable)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RetainError("Cannot tell the available RAM (no psutil, no /proc/meminfo): set train.memory_check=false.")


def device_budget(device: torch.device, local_processes: int = 1) -> tuple[int, str]:
    """Bytes one process may still allocate on `device`, and the device in words. A GPU is
    each process's own; RAM is shared by the processes of the machine."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return int(free), f"{torch.cuda.get_device_name(device)} ({gib(free)} free of {gib(total)})"
    ram = available_ram()
    share = f", shared by {local_processes} processes" if local_processes > 1 else ""
    return ram // max(local_processes, 1), f"CPU memory ({gib(ram)} available{share})"


def resident_bytes(module: torch.nn.Module, device: torch.device) -> int:
    """Bytes of `module`'s parameters and buffers already on `device` (loaded before the check)."""
    tensors = list({id(t): t for t in [*module.parameters(), *module.buffers()]}.values())
    return sum(_bytes(t) for t in tensors if t.device.type == device.type)


def check_fits(est: Estimate, budget: int, where: str, resident: int = 0) -> None:
    """Refuse, with the numbers and what to change, a run whose estimate exceeds `budget`
    bytes (free now) plus the `resident` bytes the loaded model already holds."""
    need = est.device_bytes
    if need <= budget + resident:
        return
    parts = {"activations": est.activation_bytes, "optimizer": est.optimizer_bytes + est.master_bytes,
             "weights": est.weight_bytes, "gradients": est.gradient_bytes}
    fixes = {"activations": f"lower train.batch_size (micro-batch {est.micro_batch}) or raise "
                            "train.gradient_accumulation"
                            + ("" if est.gradient_checkpointing else ", or set train.gradient_checkpointing=true"),
             "optimizer": "train fewer parameters (a LoRA method such as lora_ft instead of finetune), or shard the "
                          "optimizer over processes (accelerate launch --config_file configs/accelerate/fsdp.yaml "
                          "or deepspeed_zero2.yaml)",
             "weights": "shard the weights over processes (configs/accelerate/fsdp.yaml or deepspeed_zero3.yaml) or "
                        "use more GPUs",
             "gradients": "train fewer parameters (lora_ft) or shard the gradients (fsdp.yaml, deepspeed_zero2.yaml)"}
    order = sorted(parts, key=parts.get, reverse=True)
    raise RetainError(
        f"This run needs about {gib(need)} per process ({', '.join(f'{p} {gib(parts[p])}' for p in order)}; "
        f"{est.layout.describe()}) but {where} leaves {gib(budget + resident)} "
        f"({gib(budget)} free + {gib(resident)} the loaded model holds). To fit it: "
        + "; ".join(fixes[p] for p in order if parts[p]) + ". Set train.memory_check=false to start anyway.")


# ---- a model from its config alone --------------------------------------------------------------

KNOWN_CONFIGS: dict[str, dict] = {
    # config.json of common hub models (the fields that decide their size), for estimating offline
    "llava-hf/llava-1.5-7b-hf": {
        "model_type": "llava", "image_token_index": 32000, "pad_token_id": 32001, "projector_hidden_act": "gelu",
        "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "tie_word_embeddings": False,
        "dtype": "float16",
        "text_config": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
                        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                        "vocab_size": 32064, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5},
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
                          "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
                          "projection_dim": 768}},
    "llava-hf/llava-1.5-13b-hf": {
        "model_type": "llava", "image_token_index": 32000, "pad_token_id": 32001, "projector_hidden_act": "gelu",
        "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "tie_word_embeddings": False,
        "dtype": "float16",
        "text_config": {"model_type": "llama", "hidden_size": 5120, "intermediate_size": 13824,
                        "num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 40,
                        "vocab_size": 32064, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5},
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
                          "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
                          "projection_dim": 768}},
    **{f"openai/clip-vit-{name}": {
        "model_type": "clip", "projection_dim": proj, "dtype": "float32",
        "text_config": {"hidden_size": th, "intermediate_size": 4 * th, "num_hidden_layers": 12,
                        "num_attention_heads": th // 64, "vocab_size": 49408, "max_position_embeddings": 77},
        "vision_config": {"hidden_size": vh, "intermediate_size": 4 * vh, "num_hidden_layers": vl,
                          "num_attention_heads": vh // 64, "image_size": size, "patch_size": patch}}
       for name, proj, th, vh, vl, size, patch in (("base-patch32", 512, 512, 768, 12, 224, 32),
                                                   ("base-patch16", 512, 512, 768, 12, 224, 16),
                                                   ("large-patch14", 768, 768, 1024, 24, 224, 14),
                                                   ("large-patch14-336", 768, 768, 1024, 24, 336, 14))},
}


def model_config(ident: str, trust_remote_code: bool = False):
    """The transformers config of a local folder or a hub id (`hf:` stripped), without
    downloading weights: from the folder or the hub cache, else from `KNOWN_CONFIGS` (no
    network), else from the hub."""
    from transformers import AutoConfig, CONFIG_MAPPING

    try:
        return AutoConfig.from_pretrained(ident, trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError) as e:
        first = e
    if ident in KNOWN_CONFIGS:
        known = dict(KNOWN_CONFIGS[ident])
        return CONFIG_MAPPING[known.pop("model_type")](**known)
    try:
        return AutoConfig.from_pretrained(ident, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise RetainError(f"Cannot read the config of {ident!r} ({str(e).splitlines()[0] or first}) and retain has no "
                          f"built-in size for it (it knows {', '.join(sorted(KNOWN_CONFIGS))}): put its config.json "
                          "in a folder and estimate that folder.") from e


def skeleton(config, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """The model `config` describes, its parameters on the meta device (nothing allocated),
    in `dtype` (default: the config's own, as `from_pretrained` loads it)."""
    from accelerate import init_empty_weights
    from transformers import AutoModel, AutoModelForImageTextToText

    if dtype is None:
        dtype = getattr(config, "dtype", None) or torch.float32
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    auto = AutoModel if config.model_type in ("clip", "siglip", "siglip2", "chinese_clip") else AutoModelForImageTextToText
    with init_empty_weights():
        try:
            return auto.from_config(config, dtype=dtype)
        except ValueError as e:
            raise RetainError(f"transformers cannot build a {config.model_type!r} model from its config: {e}") from e


def tokens_assumed(config, text_tokens: int) -> int:
    """LM tokens of an item with one image (when the model takes images) and `text_tokens` of text."""
    return (image_tokens(config) if getattr(config, "vision_config", None) is not None else 0) + int(text_tokens)


def saved_activation_bytes(fn, parameters=()) -> tuple[int, Any]:
    """Bytes of the distinct tensors autograd saves while `fn()` runs, not counting the storage
    of `parameters`, and `fn`'s result: the activations a backward pass needs, measured."""
    skip = {p.untyped_storage().data_ptr() for p in parameters}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out
