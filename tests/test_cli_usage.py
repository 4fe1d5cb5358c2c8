"""A usage error prints its one line and where to read more, not the whole usage block."""

from __future__ import annotations

import pytest

from fcnet.cli import main


@pytest.mark.parametrize("argv, prog, needle", [
    (["train", "--hidden", "abc"], "fcnet train", "--hidden: expected comma-separated integers"),
    (["train", "--lr", "fast"], "fcnet train", "--lr"),
    (["data", "info"], "fcnet data info", "DATASET"),
    (["no-such-command"], "fcnet", "invalid choice"),
])
def test_usage_error_is_one_line_then_a_pointer_to_help(argv, prog, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith(f"{prog}: error: ") and needle in lines[0]
    assert lines[1] == f"see '{prog} --help'"
    assert "usage:" not in err


def test_the_console_script_exits_with_mains_status_after_threads_exit_handlers_and_flushes(tmp_path):
    """``fcnet.cli.run`` skips only the interpreter's teardown: a non-daemon thread finishes, exit
    handlers run, buffered output arrives whole, and the status is main's."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import atexit, pathlib, threading, time
        import fcnet.cli

        def main():
            atexit.register(lambda: pathlib.Path({str(tmp_path / "atexit")!r}).write_text("ran"))
            def late():
                time.sleep(0.3)
                pathlib.Path({str(tmp_path / "thread")!r}).write_text("done")
            threading.Thread(target=late).start()
            print("x" * 100_000, end="")  # no newline: still in the buffer
            return 3

        fcnet.cli.main = main
        fcnet.cli.run()
        raise SystemExit("run() returned")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3, out.stderr
    assert out.stdout == "x" * 100_000 and out.stderr == ""
    assert (tmp_path / "atexit").read_text() == "ran" and (tmp_path / "thread").read_text() == "done"


def test_python_m_fcnet_runs_the_cli():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "fcnet", "--version"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("fcnet ")


def test_under_cprofile_the_console_script_exits_as_usual_so_the_profile_is_written(tmp_path):
    import pstats
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(tmp_path / "p"), "-m", "fcnet",
                          "check"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "check" in str(pstats.Stats(str(tmp_path / "p")).stats)  # main ran, and the profile was saved
