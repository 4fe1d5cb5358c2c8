"""The `fcnet` command: each subcommand's module has ``register(subparsers)``; handlers return exit status."""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import sys
import threading
import warnings

from fcnet.errors import FcnetError

# subcommand modules, in the order `fcnet --help` lists them
COMMANDS = ["check", "data", "train", "evaluate", "predict", "sweep", "study", "bench", "grade"]


class Parser(argparse.ArgumentParser):
    """A usage error is its one line and a pointer to --help (subcommand parsers inherit this class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\nsee '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    from fcnet import __version__

    parser = Parser(prog="fcnet", description="Fully-connected neural networks for image classification: "
                    "an exact NumPy engine, a PyTorch backend, datasets, runs, sweeps and the study.")
    parser.add_argument("--version", action="version", version=f"fcnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"fcnet.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():  # restores showwarning
            default = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None):
                if str(message).startswith("fcnet: "):  # fcnet's own: the one line they are
                    print(message, file=sys.stderr if file is None else file)
                else:
                    default(message, category, filename, lineno, file, line)

            warnings.showwarning = show
            return int(args.handler(args) or 0)
    except BrokenPipeError:  # `fcnet ... | head`
        sys.stderr.close()
        return 0
    except (FcnetError, OSError) as err:  # OSError: the last resort, a write or read fcnet did not wrap
        if isinstance(err, OSError):
            err = f"{err.filename}: {err.strerror or err}" if err.filename else err.strerror or err
        print(f"fcnet: error: {err}", file=sys.stderr)
        return 2
    except MemoryError as err:  # an allocation the size checks did not foresee
        what = f" ({err})" if str(err) else ""
        print(f"fcnet: error: out of memory{what}: use a smaller --hidden, --batch-size or "
              "dataset, or free memory", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fcnet: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The console script (and ``python -m fcnet``): ``main``, then a quick exit.  Threads are
    joined, exit handlers run and stdout and stderr are flushed as at any exit; what is skipped is
    the interpreter tearing down every module it loaded, which writes nothing of fcnet's: 0.5 s
    once torch is loaded, 1.3 s at the end of a digits study.  Under a tracer or profiler (coverage,
    cProfile), which write their files after the program, it exits as usual."""
    rc = main()
    if sys.gettrace() is not None or sys.getprofile() is not None:  # coverage, cProfile: they write at exit
        sys.exit(rc)
    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`fcnet ... | head`) or stream
            pass
    os._exit(rc)
