"""The shared contract every layer uses: risk vocabulary, Verdict and its ranking, parameter constraints, profiles,
the Attack/Defense/MetricSpec base classes, the registry and conformance checks, and small I/O helpers."""
