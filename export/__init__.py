"""Checkpoint -> NIR (the contract with the Lava side), and lava-dl netx HDF5."""
