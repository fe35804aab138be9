"""Pretrained content encoders: text (sentence-transformers) and image (EfficientNet-Lite0, open_clip)."""
