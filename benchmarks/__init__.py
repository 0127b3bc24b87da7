"""The turbolift benchmark suite (issue 4).

``python -m benchmarks [--quick] [--peers] [--out DIR]`` measures turbolift
side by side with its baselines in the same run (a bare grpcio server fed
the very same bytes, local calls, plain ``python``, and Ray and Dask when
installed) and writes ``latest.json``, ``latest.md`` and ``latest.png``.

This package is shipped to turbolift workers as a bundle (its
``workloads`` module holds the functions they run), so this file must stay
free of imports.
"""
