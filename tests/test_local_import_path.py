"""Local instances import what their driver imports: a user's working directory does not
shadow the standard library or yr in the fork server and its instances."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

DRIVER = textwrap.dedent(
    """
    import yr

    @yr.instance
    class Probe:
        def where_json_comes_from(self):
            import json
            return json.__file__

    yr.init(yr.Config(num_cpus=2))
    try:
        print("json from", yr.get(Probe.invoke().where_json_comes_from.invoke(), timeout=60))
    finally:
        yr.finalize()
    """
)


def _run(argv: list[str], cwd) -> subprocess.CompletedProcess:
    # The driver imports this checkout of yr from wherever it runs.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_stdlib_module_name_in_the_working_directory_does_not_break_instances(tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "json.py").write_text("raise ImportError('the user json.py was imported')\n")
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    result = _run([sys.executable, str(script)], cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "json from" in result.stdout and str(workdir) not in result.stdout


def test_a_class_from_a_module_in_a_dash_c_drivers_working_directory_imports_in_instances(
    tmp_path,
):
    (tmp_path / "users_module.py").write_text(
        textwrap.dedent(
            """
            import yr

            @yr.instance
            class Greeter:
                def greet(self):
                    return "hello from users_module"
            """
        )
    )
    code = (
        "import yr, users_module; yr.init(yr.Config(num_cpus=2))\n"
        "try: print(yr.get(users_module.Greeter.invoke().greet.invoke(), timeout=60))\n"
        "finally: yr.finalize()\n"
    )
    result = _run([sys.executable, "-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "hello from users_module" in result.stdout
