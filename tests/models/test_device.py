"""Where eval, study and mine put models: $RETAIN_DEVICE, else a GPU when there is one, else the CPU."""

import pytest
import torch

from retain.errors import RetainError
from retain.models import default_device


def test_default_device(monkeypatch):
    monkeypatch.delenv("RETAIN_DEVICE", raising=False)
    assert default_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("RETAIN_DEVICE", "cpu")
    assert default_device() == torch.device("cpu")
    monkeypatch.setenv("RETAIN_DEVICE", "gpu0")
    with pytest.raises(RetainError, match="RETAIN_DEVICE='gpu0' is not a device"):
        default_device()
