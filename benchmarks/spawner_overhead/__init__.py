"""Parts of benchmarks/bench_spawner_overhead.py."""
