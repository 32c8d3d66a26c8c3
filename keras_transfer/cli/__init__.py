"""The `keras-transfer` command line: `keras-transfer COMMAND [options]`.

One module per command (`fit`, `predict`, `evaluate`, `similarity`, `adapt`,
`distill`), each with `add_parser(commands)` and
`run(args)`, over shared helpers: `_args` (parsing, bounds, one-line
errors), `_run_folder` (the run folder, atomic writes), `_inputs` (data and
base loading). Building the parser imports neither Keras nor TensorFlow;
a command imports them when it runs.

What every command does alike:

- Bad input ends the run before anything is trained or written, with one
  line on stderr naming the option, the value and what is allowed, and exit
  status 2.
- Ctrl-C ends it with one line and exit status 130; files are written to
  temporary names and renamed into place together, so an interrupted run
  leaves earlier results as they were.
"""

import os
import sys
import time
import warnings

from keras_transfer.cli import _args
from keras_transfer.cli import evaluate as _evaluate
from keras_transfer.cli import fit as _fit
from keras_transfer.cli import predict as _predict
from keras_transfer.cli import similarity as _similarity
from keras_transfer.cli import adapt as _adapt
from keras_transfer.cli import distill as _distill
from keras_transfer.cli._args import UsageError

COMMANDS = {
    module.NAME: module
    for module in (_fit, _predict, _evaluate, _similarity, _adapt, _distill)
}


def _process_start_time():
    """`time.time()` when this process started (Linux), else now."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


def build_parser():
    """Returns the `argparse` parser of the `keras-transfer` command."""
    parser = _args.Parser(
        prog="keras-transfer",
        description="Transfer a pretrained model to a small target dataset.",
        epilog="Run `keras-transfer COMMAND --help` for a command's options and examples.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for module in COMMANDS.values():
        module.add_parser(commands).error = parser.error
    return parser


def _warning_line(show):
    """A `warnings.showwarning` printing keras-transfer's own warnings (a
    skipped CSV row, ...) as one line, like its errors; others as `show` does."""

    def show_warning(message, category, filename, lineno, file=None, line=None):
        if "keras_transfer" not in os.path.normpath(filename).split(os.sep):
            return show(message, category, filename, lineno, file, line)
        (file or sys.stderr).write(
            f"keras-transfer: warning: {_args.one_line(message)}\n"
        )

    return show_warning


def main(argv=None):
    """Entry point of the `keras-transfer` console script; returns the exit status."""
    with warnings.catch_warnings():
        warnings.showwarning = _warning_line(warnings.showwarning)
        return _main(argv)


def _main(argv):
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help (0) or a one-line usage error (2)
            return e.code
        COMMANDS[args.command].run(args, start_time=_process_start_time())
    except UsageError as e:
        sys.stderr.write(f"{parser.prog}: error: {_args.one_line(e)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(
            f"{parser.prog}: interrupted; nothing new was written, earlier "
            "results are as they were\n"
        )
        return 130
    return 0
