"""Zero-shot: no training at all; every row of the accuracy matrix is the pre-trained model."""

from retain.methods.base import Method, register


@register
class ZeroShot(Method):
    name = "zeroshot"
    trains = False
