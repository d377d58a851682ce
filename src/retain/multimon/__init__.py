"""MultiMon (Tong, Jones, Steinhardt, 2023): systematic failures of multimodal text encoders."""
