"""`python -m bench`: the one-command benchmark of bench/run_all.py (its docstring says what it measures).

bench/ sits above the library: it imports emomesh and the services it measures, and nothing imports it."""

from bench.run_all import main

if __name__ == "__main__":
    raise SystemExit(main())
