"""The parts of the spawn-form benchmark; run it with benchmarks/bench_spawn_form.py."""
