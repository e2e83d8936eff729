"""Speed and memory benchmarks of libra against plain torchvision (see ``README.md``).

``bench.py`` is the entry point; each of its sections is measured by a module of its own.
"""
