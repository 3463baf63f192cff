"""Pure spiking steps ``(x, state, params) -> (out, state)`` with NamedTuple state."""
