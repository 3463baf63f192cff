"""Spiking models in PyTorch: surrogate-gradient training and a Loihi-integer deploy mode."""
