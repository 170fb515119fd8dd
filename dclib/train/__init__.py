"""Training the embedded default models from fixed seeds (``python -m dclib train NAME``)."""
