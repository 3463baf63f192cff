"""``lrfdyn``: train | export | simulate | profile | deploy | demo.

The entry point: builds the parser from :data:`lrfdyn.commands.COMMANDS` (each command's
arguments are in :mod:`lrfdyn.arguments`), runs the chosen handler under the memory
limit, and turns what goes wrong into one line. User errors
(:class:`~lrfdyn.errors.LrfdynError`) print one line and exit 2; ``--debug`` shows their
traceback. Anything else is a bug and keeps its traceback. SIGINT and SIGTERM unwind the
command and exit 130 and 143.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lrfdyn.commands import COMMANDS, Handler
from lrfdyn.errors import LrfdynError


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors as one line, ``lrfdyn: error: ...``, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        msg = " ".join(message.split())
        self.exit(2, f"lrfdyn: error: {msg}; see `{self.prog} --help`\n")


#: One example per command, shown at the end of its --help.
EXAMPLES = {
    "train": "lrfdyn train --data digits --attention lrf_dyn --token kv --epochs 5 "
             "--out runs/dyn",
    "analyze": "lrfdyn analyze runs/dyn/checkpoint.pt --samples 32",
    "export": "lrfdyn export runs/demo/checkpoint.pt -o model.nir",
    "simulate": "lrfdyn simulate model.nir --samples 20 --report report.json",
    "deploy": "lrfdyn deploy model.nir --dry-run",
    "profile": "lrfdyn profile model.nir --samples 10 --out model_profile",
    "demo": "lrfdyn demo --out runs/demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lrfdyn", description=__doc__.splitlines()[0],
                     epilog="example: lrfdyn demo   (then: lrfdyn <command> --help)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (adder, _, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           epilog=f"example:\n  {EXAMPLES[name]}" if name in EXAMPLES else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        adder(p)
        p.add_argument("--json", action="store_true", help="print a machine-readable result")
        p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so that every ``finally`` runs."""


def _on_signal(signum: int, frame: Any) -> None:
    """The first SIGINT or SIGTERM unwinds the command (Lava stopped, temporary files
    removed); further ones are ignored, so that the cleanup itself is not cut short."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise _Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _signal_handlers() -> dict[int, Any]:
    """Install :func:`_on_signal` (main thread only); returns the handlers it replaced."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _, handler, _ = COMMANDS[args.command]
    previous = _signal_handlers()
    try:
        return _run(args, handler)
    finally:
        import signal

        for sig, old in previous.items():
            signal.signal(sig, old)


def _run(args: argparse.Namespace, handler: Handler) -> int:
    try:
        from lrfdyn.sim.budget import limit

        with limit(getattr(args, "max_memory", None)):  # --max-memory, where a command has it
            return handler(args)
    except LrfdynError as exc:
        if args.debug:
            raise
        print(f"lrfdyn: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except (OSError, MemoryError) as exc:  # the machine's, not lrfdyn's: a full disk, no memory
        if args.debug:
            raise
        what = "out of memory" if isinstance(exc, MemoryError) else (
            f"{exc.strerror or type(exc).__name__}"
            + (f": {str(exc.filename)!r}" if getattr(exc, "filename", None) else ""))
        print(f"lrfdyn: error: {_one_line(what)}; free resources or pick other paths",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # SIGINT (130) or SIGTERM (143): one line, no traceback
        terminated = isinstance(exc, _Terminated)
        print(f"lrfdyn: {'terminated (SIGTERM)' if terminated else 'interrupted (SIGINT)'}",
              file=sys.stderr)
        return 143 if terminated else 130


def _one_line(text: str) -> str:
    """A message on one line whatever it quotes (a file's newline never splits it)."""
    return " ".join(text.split()) or "unknown error"


if __name__ == "__main__":
    sys.exit(main())
