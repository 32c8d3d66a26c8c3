"""Argument parsing shared by every `keras-transfer` command.

Nothing here imports Keras or TensorFlow, so `--help` and bad options are
answered at once.
"""

import argparse

# numpy's and Keras's seeds are unsigned 32-bit integers.
MAX_SEED = 2**32 - 1


class UsageError(ValueError):
    """Bad command-line input: reported in one line, exit status 2."""


def one_line(message):
    return " ".join(str(message).split())


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # argparse prints the whole usage block; one line is easier to read
        # (and to grep in CI logs). `--help` still shows everything.
        self.exit(2, f"{self.prog.split()[0]}: error: {one_line(message)}\n")


class HelpFormatter(
    argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter
):
    """Shows defaults, and keeps the line breaks of the examples in epilogs."""


def int_in(low, high):
    """An argparse `type`: an integer in `[low, high]`."""

    def parse(value):
        try:
            number = int(value.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{value!r} is not an integer. Allowed: an integer from {low:,} to {high:,}"
            )
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(
                f"{value!r} is out of range. Allowed: an integer from {low:,} to {high:,}"
            )
        return number

    parse.__name__ = "integer"
    return parse


def float_in(low, high, low_inclusive=False):
    """An argparse `type`: a finite number in `(low, high]` (or `[low, high]`)."""

    bracket = "[" if low_inclusive else "("

    def parse(value):
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        above = number >= low if low_inclusive else number > low
        if not (above and number <= high):
            raise argparse.ArgumentTypeError(
                f"{value!r} is out of range or not a number. Allowed: a number "
                f"in {bracket}{low:g}, {high:g}]"
            )
        return number

    parse.__name__ = "number"
    return parse


def fraction(value):
    """An argparse `type`: a number strictly between 0 and 1."""
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0 < number < 1:
        raise argparse.ArgumentTypeError(
            f"{value!r} is out of range. Allowed: a number strictly between 0 and 1"
        )
    return number


def add_common_arguments(parser):
    """Options every command takes: `--seed` and `--verbose`."""
    parser.add_argument(
        "--seed",
        type=int_in(0, MAX_SEED),
        default=0,
        help="seeds the split, subsets and training (0 to 2**32-1)",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="Keras verbosity: 0 silent, 1 progress bars, 2 one line per epoch",
    )


def add_distribution_argument(parser, what):
    """`--distribution` of `predict` and `evaluate`."""
    parser.add_argument(
        "--distribution", choices=("none", "data_parallel"), default="none",
        help=f"data_parallel: {what} under keras.distribution.DataParallel over "
        "every device Keras lists (JAX backend only); --batch-size must be a "
        "multiple of the device count, an uneven last batch is padded and "
        "the padding dropped from the results",
    )


# Library arguments (as the loaders name them in their errors) and the
# command-line options that set them.
CLI_OPTIONS = {
    "encoding": "--encoding",
    "text_column": "--text-column",
    "label_column": "--label-column",
    "on_bad_lines": "--on-bad-lines",
    "test_fraction": "--test-fraction",
    "image_size": "--image-size",
    "sequence_length": "--sequence-length",
    "n_train": "--n-train",
    "n_test": "--n-test",
    "seed": "--seed",
}


def cli_spelling(message, options=None):
    """A library error as the command line says it: `encoding='cp1252'` ->
    `--encoding cp1252`, and `` `encoding` `` -> `--encoding`.

    Errors of the loaders name their Python arguments; a user of the command
    line typed options, and must read the option to change.
    """
    import re

    text = str(message)
    # Library arguments the command line has no option for: say what a
    # user of the command line can do instead.
    text = re.sub(
        r"shorter than `min_duration`=([\d.]+) s\. Remove it or lower `min_duration`\.",
        r"shorter than the \1 s the command line reads (it has no option to "
        r"lower this). Remove the file, or pad it with silence to at least \1 s.",
        text,
    )
    for name, option in (options or CLI_OPTIONS).items():
        def value(match, option=option):
            raw = match.group(1)
            if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"" and (
                re.fullmatch(r"[\w.\-+/]+", raw[1:-1])
            ):
                raw = raw[1:-1]  # a plain word needs no quotes on a command line
            return f"{option} {raw}"

        text = re.sub(
            rf"(?<![\w\-]){name}=('[^']*'|\"[^\"]*\"|[^\s,;)]+)", value, text
        )
        text = text.replace(f"`{name}`", option)
    return text
