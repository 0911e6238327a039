"""autotag's benchmark: stand-in model + clips → model alone, autotag --once, the article's
method, decoding, memory, watch mode, startup, a batch/thread sweep → one table (issue 8).

Run it with `python -m benchmarks` (`--quick` for a shorter run).
"""
