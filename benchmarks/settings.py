"""How much each section measures in quick and in full mode.

Counts are upper bounds; each loop also has a time budget in seconds (see
:class:`benchmarks.measure.Budget`). Quick mode exists to prove that the
suite works (CI smoke test, well under a minute on 2 cores); its figures
are too few to quote. Full mode is what the README's table comes from
(under 5 minutes on 2 cores).
"""
from __future__ import annotations

from dataclasses import dataclass

KB = 1_000
MB = 1_000_000
GB = 1_000_000_000


def size_label(size: int) -> str:
    """'100 KB', '10 MB', '1 GB': how reports name a payload size."""
    for unit, name in ((GB, "GB"), (MB, "MB"), (KB, "KB")):
        if size >= unit:
            return f"{size // unit} {name}"
    return f"{size} B"


def size_key(size: int) -> str:
    """'100kb', '10mb', '1gb': how figure names carry a payload size."""
    return size_label(size).replace(" ", "").lower()


@dataclass(frozen=True)
class Mode:
    name: str
    workers: int = 2                 # turbolift workers and baseline server processes
    # 1. sequential calls: interleaved rounds of per_round calls of each variant
    seq_rounds: int = 40
    seq_per_round: int = 25
    seq_budget: float = 15.0
    local_blocks: int = 200          # local calls are timed in blocks ...
    local_block_calls: int = 2_000   # ... of this many calls each
    # 2. concurrency
    in_flight: int = 64
    conc_calls: int = 2_000          # calls per repetition
    conc_reps: int = 4
    burst_tasks: int = 2_000         # submitted at once, then gathered (the peers' shape)
    conc_budget: float = 30.0
    # 3. map
    map_items: int = 200_000
    map_reps: int = 3
    cpu_ms: float = 10.0
    cpu_items: int = 200
    cpu_reps: int = 2
    map_budget: float = 30.0
    # 4. cold start (subprocess runs per variant, after one discarded warm-up run each)
    cold_reps: int = 6
    cold_budget: float = 30.0
    # 5. import hook (fresh interpreters per variant, after one discarded warm-up each)
    import_reps: int = 15
    import_budget: float = 30.0
    # 6. payloads: size -> repetitions per direction and contender
    payloads: tuple = ((100 * KB, 40), (MB, 20), (10 * MB, 8), (100 * MB, 3), (GB, 1))
    payload_warmup_below: int = GB   # sizes below this get a discarded warm-up transfer
    payload_budget: float = 80.0
    # 7. peers
    peers: bool = True
    peer_seq_calls: int = 300
    peer_tasks: int = 2_000
    peer_reps: int = 3
    peer_map_items: int = 2_000
    peer_cpu_items: int = 200
    peer_cold_reps: int = 3
    peer_budget: float = 40.0        # per peer: its measurements, then again its cold starts
    rpc_peer_budget: float = 15.0    # per plain-RPC peer (execnet, rpyc, Pyro5, the process pools)


FULL = Mode(name="full")

QUICK = Mode(
    name="quick",
    seq_rounds=8, seq_per_round=25, seq_budget=4.0,
    local_blocks=30, local_block_calls=2_000,
    conc_calls=500, conc_reps=2, burst_tasks=500, conc_budget=6.0,
    map_items=100_000, map_reps=1, cpu_items=40, cpu_reps=1, map_budget=10.0,
    cold_reps=2, cold_budget=12.0,
    import_reps=3, import_budget=8.0,
    payloads=((MB, 5), (100 * MB, 1)), payload_warmup_below=100 * MB, payload_budget=10.0,
    peers=False,
    peer_seq_calls=50, peer_tasks=300, peer_reps=1, peer_map_items=300, peer_cpu_items=20,
    peer_cold_reps=1, peer_budget=20.0, rpc_peer_budget=5.0,
)
