"""LoRRA against a direct computation of its formula; a no-op at initialisation; the router."""

import math

import torch

from retain.wings.lorra import LearnerRouter, LoRRA


def direct(m: LoRRA, h, f, mask):
    """The formula, one head and one item at a time, with explicit matrices."""
    out = torch.zeros_like(h)
    hd = m.head_dim
    for b in range(h.shape[0]):
        Q = h[b] + h[b] @ m.q.A @ m.q.B
        K = f[b] + f[b] @ m.k.A @ m.k.B
        V = f[b] + f[b] @ m.v.A @ m.v.B
        heads = []
        for i in range(m.heads):
            sl = slice(i * hd, (i + 1) * hd)
            s = Q[:, sl] @ K[:, sl].T / math.sqrt(hd)
            s = s.masked_fill(~mask[b], float("-inf"))
            p = torch.softmax(s, -1).nan_to_num(0.0)
            heads.append(p @ V[:, sl])
        out[b] = torch.cat(heads, -1) @ m.o.A @ m.o.B
    return out


def test_lorra_is_a_no_op_at_init_and_matches_its_formula():
    torch.manual_seed(0)
    m = LoRRA(dim=16, heads=4, rank=3)
    h, f = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    mask = torch.rand(2, 5, 7) > 0.3
    mask[0, 2] = False  # a query with nothing to attend to
    assert torch.equal(m(h, f, mask), torch.zeros(2, 5, 16))  # B = 0: exactly nothing added
    assert all(float(lr.A.detach().std()) < 0.05 for lr in (m.q, m.k, m.v, m.o))  # trunc-normal(0.02)
    with torch.no_grad():
        for lr in (m.q, m.k, m.v, m.o):
            lr.B.normal_()
    got = m(h, f, mask)
    assert torch.allclose(got, direct(m, h, f, mask), atol=1e-5)
    assert torch.equal(got[0, 2], torch.zeros(16))


def test_router_weights_sum_to_one():
    torch.manual_seed(0)
    r = LearnerRouter(features=3)
    w = r(torch.rand(4, 9, 3))
    assert w.shape == (4, 9, 2) and torch.allclose(w.sum(-1), torch.ones(4, 9)) and (w > 0).all()
