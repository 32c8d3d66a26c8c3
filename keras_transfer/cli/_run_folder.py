"""The run folder: `<logdir>/<run-name>/`, and writing results into it.

A run's model and `results.json` are written to temporary names first and
renamed into place together, with Ctrl-C held back for the two renames, so
an interrupted run leaves the earlier model and results as they were.
Files get the usual permissions (the umask's), not `mkstemp`'s 0600.
"""

import contextlib
import datetime
import json
import os
import shutil
import signal
import tempfile
import threading
import uuid

from keras_transfer.cli._args import UsageError


def check_run_name(run_name):
    if run_name is not None and (
        not run_name
        or run_name in (".", "..")
        or os.sep in run_name
        or (os.altsep and os.altsep in run_name)
    ):
        raise UsageError(
            f"--run-name {run_name!r} is not a folder name. Allowed: a "
            "non-empty name without path separators"
        )


def check_writable_folder(option, folder):
    """Creates `folder` if needed and checks a file can be written there."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_test_"):
            pass
    except OSError as e:
        raise UsageError(
            f"{option} {folder!r} is not a writable folder ({e.strerror or e}). "
            "Allowed: a folder you can write to"
        )


def default_run_name(*parts):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    names = [os.path.splitext(os.path.basename(os.path.normpath(p)))[0] for p in parts]
    return "-".join(names + [stamp])


def check_paths(args, parts, saves_model=True):
    """Checks `--run-name`, `--logdir` and (when the command saves a model)
    `--output`; sets `args.run_name` from `parts` when it was not given.

    Returns `(run_dir, output)`; `output` is None when nothing is saved.
    """
    check_run_name(args.run_name)
    if args.run_name is None:
        args.run_name = default_run_name(*parts)
    if os.path.exists(args.logdir) and not os.path.isdir(args.logdir):
        raise UsageError(
            f"--logdir {args.logdir!r} is a file. Allowed: a folder you can write to"
        )
    run_dir = os.path.join(args.logdir, args.run_name)
    if not saves_model:
        return run_dir, None
    output = args.output or os.path.join(run_dir, "model.keras")
    if not output.endswith(".keras"):
        raise UsageError(
            f"--output {output!r} does not end in '.keras'. Allowed: a path "
            "ending in .keras (the Keras model format)"
        )
    if os.path.isdir(output):
        raise UsageError(f"--output {output!r} is a folder. Allowed: a .keras file path")
    if os.path.exists(output) and not args.overwrite:
        raise UsageError(
            f"--output {output!r} already exists and would be replaced. Allowed: "
            "a new path, or add --overwrite"
        )
    return run_dir, output


def prepare_paths(args):
    """Picks the run folder and the model path, and checks both are writable.

    Sets `args.run_name` when it was not given. Returns `(run_dir, output)`.
    """
    run_dir, output = check_paths(args, (args.base, args.data, args.strategy))
    check_writable_folder("--logdir", run_dir)
    check_writable_folder("--output", os.path.dirname(os.path.abspath(output)))
    return run_dir, output


def partial_path(path):
    """A fresh temporary name next to `path` (same folder, so renames are atomic)."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".partial-{uuid.uuid4().hex[:12]}-{name}")


def write_json(path, value):
    """Writes `value` as JSON to `path` (created with the umask's permissions)."""
    with open(path, "x") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


@contextlib.contextmanager
def holding_interrupts():
    """Delays Ctrl-C (SIGINT) until the block is done; then raises it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *a: received.append(a))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


class PendingFiles:
    """Files written under temporary names, put in place together by `commit`.

    Usage:

    ```python
    with PendingFiles() as pending:
        model.save(pending.path_for(output))
        write_json(pending.path_for(results_path), results)
        pending.commit()   # renames both; until then nothing is replaced
    ```

    Leaving the block without `commit` (an error, Ctrl-C) removes the
    temporary files and keeps every earlier file.
    """

    def __init__(self):
        self._pending = []  # (temporary, final)

    def __enter__(self):
        return self

    def path_for(self, final):
        temporary = partial_path(final)
        self._pending.append((temporary, final))
        return temporary

    def discard(self, temporary):
        """Drops one pending path (removing what was written there): it
        will not be put in place by `commit`."""
        if os.path.isdir(temporary):
            shutil.rmtree(temporary, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        self._pending = [p for p in self._pending if p[0] != temporary]

    def commit(self):
        replaced = []  # earlier folders moved aside, removed once all are in place
        with holding_interrupts():
            for temporary, final in self._pending:
                if os.path.isdir(temporary) and os.path.isdir(final):
                    # A folder (e.g. a SavedModel) cannot replace a non-empty one.
                    aside = partial_path(final)
                    os.replace(final, aside)
                    replaced.append(aside)
                os.replace(temporary, final)
            self._pending = []
        for aside in replaced:
            shutil.rmtree(aside, ignore_errors=True)

    def __exit__(self, *exc_info):
        for temporary, _ in self._pending:
            if os.path.isdir(temporary):
                shutil.rmtree(temporary, ignore_errors=True)
                continue
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)
        self._pending = []
        return False


def save_atomically(model, path):
    """Saves `model` to a temporary file next to `path`, then renames it.

    A run killed while saving leaves any earlier file at `path` intact.
    """
    with PendingFiles() as pending:
        model.save(pending.path_for(path))
        pending.commit()
