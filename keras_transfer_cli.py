"""The `keras-transfer` console script: a light launcher for `keras_transfer.cli`.

`import keras_transfer` imports every subpackage, and with them Keras and its
backend (about 5 s, TensorFlow included), because loading a saved model needs
the package's classes registered. Every command needs that; a help request
does not. So for `keras-transfer [COMMAND] --help` (and a bare
`keras-transfer`) the parser is built from `keras_transfer.cli` alone, under a
stand-in for the package that does not run `keras_transfer/__init__.py`, and the
stand-in is removed again before anything else runs. Whatever is not a help
request or a usage error goes to `keras_transfer.cli.main` with the real
package imported.
"""

import importlib.util
import sys
import types

_PACKAGE = "keras_transfer"


def _parse_without_package(argv):
    """Parses `argv` with the CLI's parser, without `keras_transfer/__init__`.

    Returns the exit status of a help request or a usage error (argparse
    printed it), or None when `argv` parses into a command to run.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    stand_in = types.ModuleType(_PACKAGE)
    stand_in.__path__ = list(spec.submodule_search_locations)
    sys.modules[_PACKAGE] = stand_in
    try:
        from keras_transfer.cli import build_parser

        try:
            build_parser().parse_args(argv)
        except SystemExit as e:
            return e.code
        return None
    finally:
        for name in [n for n in sys.modules if n == _PACKAGE or n.startswith(_PACKAGE + ".")]:
            del sys.modules[name]


def main(argv=None):
    """Entry point of the `keras-transfer` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if _PACKAGE not in sys.modules and (
        not argv or any(a in ("-h", "--help") for a in argv)
    ):
        code = _parse_without_package(argv)
        if code is not None:
            return code
    from keras_transfer.cli import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
