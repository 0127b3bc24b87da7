"""The turbolift example: the same program, local or distributed.

    python app.py                    # everything in this process
    python -m turbolift app.py       # crunch() runs on local worker processes
"""
import asyncio

from turbolift import on


@on()
def crunch(n: int) -> int:
    """Sum of the squares below n: a stand-in for real work."""
    return sum(i * i for i in range(n))


def main() -> None:
    print("one call:", crunch(10_000))
    futures = [crunch.submit(n) for n in range(0, 50_000, 5_000)]
    print("submitted:", [f.result() for f in futures])
    print("mapped:", sum(crunch.map(range(2_000))))
    print("awaited:", asyncio.run(crunch.aio(1_000)))


if __name__ == "__main__":
    main()
