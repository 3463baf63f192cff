"""Run lowered networks on Lava's CPU simulator and on the integer reference; compare and count."""
