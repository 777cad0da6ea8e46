"""Shipping a model: int8 quantization, Hugging Face export/import, model cards, the local hub."""
