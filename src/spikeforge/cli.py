"""The ``spikeforge`` command: parse, resolve, call the library. Nothing else lives here.

Each command group lives beside the code it drives, in a module exposing ``register(subparsers)``;
the registered parser sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from . import __version__

# modules that contribute sub-commands (each has register(subparsers))
COMMAND_MODULES = (
    "spikeforge.neurons.cli",
    "spikeforge.data.cli",
    "spikeforge.models.cli",
    "spikeforge.training.cli",
    "spikeforge.methods.cli",
    "spikeforge.convert.cli",
    "spikeforge.deploy.export.cli",
    "spikeforge.deploy.cli",
    "spikeforge.energy.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikeforge",
        description="Train, convert, compress and measure spiking neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"spikeforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name in COMMAND_MODULES:
        if importlib.util.find_spec(mod_name) is not None:
            importlib.import_module(mod_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    if args.command in ("train", "eval"):
        from .runtime import keep_freed_memory

        keep_freed_memory()
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"spikeforge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `spikeforge datasets | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 0
    except OSError as e:  # read-only folder, disk full, permission denied: one line naming the file
        where = f"{e.filename}: " if e.filename else ""
        print(f"spikeforge {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # an error that documents its own exit status (training stopped on NaN/inf: 3)
        if not isinstance(getattr(e, "exit_status", None), int):
            raise
        print(f"spikeforge {args.command}: {e}", file=sys.stderr)
        return e.exit_status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
