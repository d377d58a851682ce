"""retain: measure and prevent forgetting in multimodal models.

Implements, under one trainer and one evaluation protocol: EMT (Zhai et al., 2023),
LDIFS (Mukhoti et al., 2023), WINGS (Zhang et al., 2024), MultiMon (Tong et al., 2023)
and the MCITlib benchmark protocol (Guo et al., 2025).
"""

__version__ = "0.1.0"
