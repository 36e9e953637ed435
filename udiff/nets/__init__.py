"""Networks: backbones that map (input, noise label) to a prediction, and the exact Gaussian denoiser.

Backbones (unet, mlp) know nothing of processes or bases: they see a tensor laid out like the data (the
process state stacked along channels) and one scalar noise label per item.
"""
