"""Benchmarks: Antex against a bare aiohttp pass-through, measured in the same run (`make bench`)."""
