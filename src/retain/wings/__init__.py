"""WINGS (Zhang et al., 2024): visual and textual low-rank learners beside attention."""
