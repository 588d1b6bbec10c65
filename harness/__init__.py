"""Real services for shipit's tests and benchmarks, on loopback: Distribution registries,
moto's AWS endpoint, a fault-injecting proxy, and a registry reader to check what they hold.

No pytest here: tests/ wraps these in fixtures, bench/ uses them directly.
"""
