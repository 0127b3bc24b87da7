"""--remote MODULE:QUALNAME: distributing functions that carry no decorator."""
from __future__ import annotations

import json
import os
import re

from conftest import make_installed_library, run_python, write_files

GEOMETRY = """
    import os

    def area(w, h):
        return w * h

    def area_and_pid(w, h):
        return area(w, h), os.getpid()

    class Shapes:
        @staticmethod
        def square(x):
            return x * x, os.getpid()
"""

APP = """
    import json, os
    import geometry
    from geometry import area_and_pid

    print(json.dumps({"me": os.getpid(), "plain": area_and_pid(3, 4),
                      "attr": geometry.area_and_pid(5, 6), "method": geometry.Shapes.square(7)}))
"""


def test_remote_own_module_functions_equal_local_results(tmp_path, cache_dir):
    write_files(tmp_path, {"geometry.py": GEOMETRY, "app.py": APP})
    local = json.loads(run_python(["app.py"], tmp_path, cache_dir).stdout)
    out = run_python(["-m", "turbolift", "--remote", "geometry:area_and_pid", "--remote",
                      "geometry:Shapes.square", "app.py"], tmp_path, cache_dir)
    assert out.returncode == 0, out.stderr
    remote = json.loads(out.stdout)
    for key in ("plain", "attr", "method"):
        assert remote[key][0] == local[key][0]
        assert remote[key][1] != remote["me"], f"{key} ran in the caller"
    assert local["plain"][1] == local["me"]


def test_remote_function_of_an_installed_library(tmp_path, cache_dir):
    site = make_installed_library(tmp_path / "env" / "site-packages", "fancylib", "1.4.2", """
        import os

        def shout(text):
            return text.upper() + "!", os.getpid(), __file__
    """)
    write_files(tmp_path / "proj", {"app.py": """
        import json, os
        from fancylib import shout
        print(json.dumps({"me": os.getpid(), "result": shout("hi")}))
    """})
    env = {"PYTHONPATH": str(site)}
    local = json.loads(run_python(["app.py"], tmp_path / "proj", cache_dir, **env).stdout)
    out = run_python(["-m", "turbolift", "--remote", "fancylib:shout", "app.py"], tmp_path / "proj",
                     cache_dir, **env)
    assert out.returncode == 0, out.stderr
    remote = json.loads(out.stdout)
    text, pid, where = remote["result"]
    assert text == local["result"][0] == "HI!"
    assert pid != remote["me"]
    # Not shipped: the worker imported its own installed copy of the library.
    assert where == os.path.join(str(site), "fancylib", "__init__.py")


def test_a_missing_function_name_is_a_clear_error(tmp_path, cache_dir):
    write_files(tmp_path, {"geometry.py": GEOMETRY, "app.py": APP})
    out = run_python(["-m", "turbolift", "--remote", "geometry:aera", "app.py"], tmp_path, cache_dir)
    assert out.returncode == 1
    assert "geometry has no 'aera'" in out.stderr


def test_a_library_test_suite_passes_under_turbolift_with_functions_distributed(tmp_path, cache_dir):
    write_files(tmp_path, {
        "mathlib/__init__.py": "",
        "mathlib/ops.py": """
            import os

            def gcd(a, b):
                while b:
                    a, b = b, a % b
                return a

            def lcm(a, b):
                return a * b // gcd(a, b)

            def where():
                return os.getpid()
        """,
        "tests/test_ops.py": """
            import os
            import pytest
            from mathlib import ops

            @pytest.mark.parametrize("a,b,want", [(12, 18, 6), (7, 5, 1), (0, 9, 9)])
            def test_gcd(a, b, want):
                assert ops.gcd(a, b) == want

            def test_lcm():
                assert ops.lcm(4, 6) == 12

            def test_gcd_raises_on_bad_types():
                with pytest.raises(TypeError):
                    ops.gcd("a", 2)

            def test_record_where(tmp_path_factory):
                with open(os.environ["WHERE_FILE"], "w") as handle:
                    handle.write(f"{os.getpid()} {ops.where()}")
        """,
    })
    where = tmp_path / "where.txt"
    plain = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], tmp_path, cache_dir,
                       WHERE_FILE=str(where))
    plain_pids = where.read_text().split()
    remote = ["--remote", "mathlib.ops:gcd", "--remote", "mathlib.ops:where"]
    pytest_args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    distributed = run_python(["-m", "turbolift", *remote, *pytest_args], tmp_path, cache_dir,
                             WHERE_FILE=str(where))
    tester, worker = where.read_text().split()

    def summary(out):
        return re.search(r"(\d+) passed", out.stdout).group(0), out.returncode

    assert summary(plain) == summary(distributed) == ("6 passed", 0), distributed.stdout + distributed.stderr
    assert plain_pids[0] == plain_pids[1]
    assert tester != worker  # under turbolift the function ran in a worker
