"""Checkpoint -> NIR (the contract with the Lava side), and NIR -> PyTorch (the float model)."""
