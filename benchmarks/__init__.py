"""Benchmarks: ``python -m benchmarks [NAME ...] [--device cuda] [--quick]``.

Each ``benchmarks/bench_<name>.py`` defines ``run(device: str, quick: bool) -> list[dict]``; every dict
is one benchmark (config, timings, peak memory, ratio to a baseline measured in the same run) and is
printed as one JSON line.
"""
