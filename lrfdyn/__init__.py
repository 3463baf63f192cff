"""lrfdyn: LRF-Dyn spiking transformers from PyTorch through NIR to Lava and Loihi 2.

The subpackages are the project's top-level folders: ``lrfdyn.train`` (PyTorch
models and training), ``lrfdyn.export`` (checkpoint -> NIR), ``lrfdyn.loihi``
(NIR -> Lava processes, Loihi fixed-point arithmetic, deployment) and
``lrfdyn.sim`` (CPU simulation, spike-exact comparison, counting).
"""

__version__ = "0.1.0"
