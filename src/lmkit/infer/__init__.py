"""Using a trained model: sampling and generation, fill-mask, held-out evaluation, visualisation."""
