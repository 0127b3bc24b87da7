"""The interfaces users already have: a concurrent.futures Executor and a joblib backend."""
from __future__ import annotations

import json

from conftest import run_python, write_files

EXECUTOR = """
    import asyncio, json, math, os
    import turbolift

    def square(x):
        return x * x

    class Adder:
        def __init__(self, n):
            self.n = n
        def __call__(self, x):
            return x + self.n

    @turbolift.on(retries=1)
    def marked(x):
        return -x

    found = {}
    with turbolift.Executor("local:2") as pool:
        found["submit"] = pool.submit(square, 7).result()
        found["lambda_pid"] = pool.submit(lambda: os.getpid()).result()
        found["map"] = list(pool.map(square, range(50)))
        found["map2"] = list(pool.map(pow, range(5), range(5)))
        found["callable_object"] = pool.submit(Adder(5), 1).result()
        found["builtin"] = pool.submit(math.sqrt, 16).result()
        found["marked"] = pool.submit(marked, 3).result()
        found["raised"] = type(pool.submit(math.sqrt, -1).exception()).__name__

        async def main():
            loop = asyncio.get_running_loop()
            return await asyncio.gather(*(loop.run_in_executor(pool, square, i) for i in range(10)))

        found["run_in_executor"] = asyncio.run(main())
        found["workers"] = pool.workers()
    try:
        pool.submit(square, 1)
    except RuntimeError as exc:
        found["after_shutdown"] = str(exc)
    found["me"] = os.getpid()
    print(json.dumps(found))
"""


def test_executor_submit_map_with_and_run_in_executor(tmp_path, cache_dir):
    write_files(tmp_path, {"app.py": EXECUTOR})
    done = run_python(["app.py"], tmp_path, cache_dir, timeout=180)   # a plain `python`: no -m turbolift
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["submit"] == 49 and found["map"] == [x * x for x in range(50)]
    assert found["map2"] == [pow(x, x) for x in range(5)]
    assert found["lambda_pid"] != found["me"]   # it ran on a worker
    assert found["callable_object"] == 6 and found["builtin"] == 4.0 and found["marked"] == -3
    assert found["raised"] == "ValueError"
    assert found["run_in_executor"] == [x * x for x in range(10)]
    assert found["after_shutdown"] == "cannot schedule new futures after shutdown"
    assert found["workers"] == 2


JOBLIB = """
    import json, math, os
    import joblib
    from joblib import Parallel, delayed
    import turbolift.joblib_backend

    def inner(x):
        return sum(Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(x)))

    def run():
        return {"roots": Parallel(n_jobs=-1)(delayed(math.sqrt)(i * i) for i in range(200)),
                "nested": Parallel(n_jobs=2)(delayed(inner)(x) for x in range(6)),
                "generator": list(Parallel(n_jobs=2, return_as="generator")(
                    delayed(abs)(-i) for i in range(9)))}

    local = run()
    with joblib.parallel_config(backend="turbolift", cluster="local:2"):
        remote = run()
        pids = sorted(set(Parallel(n_jobs=-1, batch_size=1)(delayed(os.getpid)() for _ in range(40))))
    print(json.dumps({"local": local, "remote": remote, "pids": pids, "me": os.getpid()}))
"""


def test_joblib_backend_gives_the_local_results_from_workers(tmp_path, cache_dir):
    write_files(tmp_path, {"app.py": JOBLIB})
    done = run_python(["app.py"], tmp_path, cache_dir, timeout=180)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["remote"] == found["local"]
    assert len(found["pids"]) == 2 and found["me"] not in found["pids"]   # both workers, not the caller
