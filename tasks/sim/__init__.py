"""Simulators for demos, tests and benchmarks: sensor traffic to live sites, and sample windows
of sites that do not run as processes. Nothing in the product depends on them."""
