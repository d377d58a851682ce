"""Text encoders for MultiMon: pooling, the embedding cache, the shared-layer forward."""

import torch

from retain.multimon.encoders import (cached_embeddings, cached_pair_embeddings, embed_both, reference_encoder,
                                      shared_layers, target_encoder)

SENTENCES = ["a red circle on the left.", "two dogs chasing a cat in the morning.", "there is no yellow triangle.",
             "a photo of a zebra.", "all of the circles are green and every triangle is small."]


def test_embedding_cache_is_keyed_by_encoder_and_corpus(tiny_clip_dir):
    target, _ = target_encoder(str(tiny_clip_dir))
    reference = reference_encoder("minilm")
    a, hit = cached_embeddings(target, ["a cat.", "a dog."])
    assert not hit and cached_embeddings(target, ["a cat.", "a dog."])[1]
    assert not cached_embeddings(target, ["a cat.", "a bird."])[1]
    b, hit = cached_embeddings(reference, ["a cat.", "a dog."])
    assert not hit and b.shape[1] == 384 and a.shape[1] == 16
    # Order and normalisation: the cached rows are the rows of a direct encode.
    direct = reference.encode(["a dog.", "a cat."])
    assert torch.allclose(b[[1, 0]], direct, atol=1e-5) and torch.allclose(b.norm(dim=1), torch.ones(2), atol=1e-5)


def test_shared_bottom_layers_run_once_and_give_each_towers_own_embeddings():
    reference = reference_encoder("minilm")
    target = reference_encoder("minilm")
    target.name = "minilm-top-changed"
    with torch.no_grad():
        for p in target.tower.encoder.layer[4:].parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert shared_layers(target, reference) == 4 and shared_layers(reference, reference) == 6
    a, b = embed_both(target, reference, SENTENCES, 4, batch_size=2)
    assert torch.allclose(a, target.encode(SENTENCES), atol=1e-5) and torch.allclose(b, reference.encode(SENTENCES), atol=1e-5)
    assert not torch.allclose(a, b, atol=1e-3)
    t, r, info = cached_pair_embeddings(target, reference, SENTENCES)
    assert info == {"target": False, "reference": False, "shared_layers": 4} and torch.allclose(t, a, atol=1e-5)
    assert cached_pair_embeddings(target, reference, SENTENCES)[2]["target"] is True
    # A sentence longer than the shorter reader would be truncated differently: no shared path.
    target.max_length = 8
    assert embed_both(target, reference, SENTENCES, 4) is None


def test_a_clip_text_tower_shares_nothing_with_minilm(tiny_clip_dir):
    target, _ = target_encoder(str(tiny_clip_dir))
    assert shared_layers(target, reference_encoder("minilm")) == 0


def test_batched_embeddings_equal_each_sentence_alone():
    """Tokenised once, sorted by length, padded in batches: each row equals the sentence run alone
    (no padding) through the model and pooled, truncation included. In float64, so that batching
    may change only the last float32 rounding of the result."""
    reference = reference_encoder("minilm")
    reference.tower.double()
    reference.max_length = 9  # two of the sentences are cut
    texts = [*SENTENCES, "a dog."]
    got = reference.encode(texts, batch_size=2)
    tok = reference.tokenizer
    for text, row in zip(texts, got):
        ids = tok(text, truncation=True, max_length=9, return_tensors="pt")
        with torch.no_grad():
            hidden = reference.tower(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).last_hidden_state
        alone = torch.nn.functional.normalize(hidden[0].mean(0), dim=-1).float()
        assert torch.allclose(row, alone, atol=1e-7, rtol=0), text
    assert sum(len(tok(t)["input_ids"]) > 9 for t in texts) == 2
