"""The `mnist-basics` console script: each subcommand is a module with `add_arguments(parser)`
and `run(args) -> int`; its UserError is one escaped `<command>: error: ...` line, exit 2."""

import argparse
import importlib
import io
import os
import sys

from mnist_basics.errors import UserError, printable

# subcommand -> module; imported only when that subcommand runs (torch, starlette are slow).
COMMANDS = {
    "predict": ("mnist_basics.predict", "predict the digit in image files or folders"),
    "serve": ("mnist_basics.app", "a local page to draw a digit and see the model's guess"),
    "sweep": ("mnist_basics.sweep", "run a grid of experiments on a Ray cluster (or locally)"),
}


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand; only `command`'s module is imported, for its arguments."""
    ap = argparse.ArgumentParser(prog="mnist-basics", description="Use the trained model.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == command:
            importlib.import_module(module).add_arguments(p)
        p.set_defaults(_module=module)
    return ap


def main(argv: list[str] | None = None) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):  # a name a legacy locale cannot encode: \u65e5
        sys.stdout.reconfigure(errors="backslashreplace")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser(argv[0] if argv else None).parse_args(argv)
    try:
        return importlib.import_module(args._module).run(args)
    except UserError as e:
        message, code = f"error: {printable(str(e))}", 2
    except KeyboardInterrupt:
        message, code = "interrupted", 130
    except OSError as e:
        if os.environ.get("MNIST_BASICS_TRACEBACK"):
            raise
        where = f"{e.filename}: " if e.filename else ""
        message, code = f"error: {printable(f'{where}{e.strerror or e}')}", 1
    print(f"{args.command}: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
