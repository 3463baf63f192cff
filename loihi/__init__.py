"""NIR -> Lava: fixed-point mapping, lowering, Lava process construction, lava-dl netx
HDF5 files, deployment.

Importing this package does not import Lava; modules that do import
:mod:`lrfdyn.loihi.compat` first.
"""
