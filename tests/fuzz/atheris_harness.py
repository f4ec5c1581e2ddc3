"""Coverage-guided fuzzing of the file readers with atheris (``pip install -e .[fuzz]``).

    python -m tests.fuzz.atheris_harness --format torch_zip -- -max_total_time=3600 \\
        -timeout=20 -rss_limit_mb=1024 fuzz-corpus/torch_zip

Each input is one whole file of ``--format`` (see :data:`tests.fuzz.mutate.FORMATS`); the
corpus directory is seeded with the valid seed files on first use. The target reads the input
with the public API (``lf.load`` and a short ``predict`` for ``lfm``, ``spec_from_torch_file``
for the torch formats, the Keras reader for ``keras``/``h5``) and fails (atheris reports a
crash and writes the input) on any exception that is not an lstm_fast error. libFuzzer's
``-timeout`` and ``-rss_limit_mb`` catch hangs and memory blow-ups.

Keras files are read in this process by default (``_spec_from_keras_file_here``: our config
and weight-reading code is then instrumented). Exceptions raised inside h5py are expected there
(the bounded child of ``spec_from_keras_file`` turns them into ModelFileError), and a
libFuzzer timeout is HDF5 looping on corrupted metadata, which the child's time limit contains
in production. ``--bounded`` fuzzes ``spec_from_keras_file`` itself (child process, so only
the parent's code gets coverage).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports(include=["lstm_fast", "zipfile", "pickletools", "json"]):
    import numpy as np

    import lstm_fast as lf
    from lstm_fast.converters.keras import _spec_from_keras_file_here, spec_from_keras_file
    from lstm_fast.converters.torch import spec_from_torch_file

from .mutate import FORMATS, SUFFIX
from .seeds import build_seeds


def _load_and_run(path: str) -> Any:
    model = lf.load(path)
    x = (np.zeros((1, 3), np.int32) if model.takes_ids
         else np.zeros((1, 3, model.input_size), np.float32))
    return model.predict(x)


def _raised_in_h5py(e: BaseException) -> bool:
    """Whether ``e`` comes from inside h5py (which the bounded child turns into a
    ModelFileError, like any failure of the child)."""
    tb, last = e.__traceback__, ""
    while tb is not None:
        last, tb = tb.tb_frame.f_code.co_filename, tb.tb_next
    return "h5py" in last


def reader(fmt: str, bounded: bool) -> Callable[[str], Any]:
    """The API call that reads one file of ``fmt``."""
    if fmt == "lfm":
        return _load_and_run
    if fmt in ("keras", "h5"):
        if bounded:
            return spec_from_keras_file
        return lambda path: _spec_from_keras_file_here(path, None, None)
    return spec_from_torch_file


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--bounded", action="store_true",
                   help="keras/h5: fuzz spec_from_keras_file (child process)")
    p.add_argument("libfuzzer", nargs=argparse.REMAINDER,
                   help="after --: libFuzzer options and the corpus directory")
    args = p.parse_args()
    libfuzzer = [a for a in args.libfuzzer if a != "--"]
    corpus = [a for a in libfuzzer if not a.startswith("-")]
    if corpus:
        folder = Path(corpus[0])
        folder.mkdir(parents=True, exist_ok=True)
        if not any(folder.iterdir()):
            with tempfile.TemporaryDirectory() as tmp:
                for seed in build_seeds(Path(tmp))[args.format]:
                    shutil.copy(seed, folder / seed.name)
    read = reader(args.format, args.bounded)
    scratch = tempfile.mkdtemp(prefix="lstm_fast_atheris_")
    path = os.path.join(scratch, "input" + SUFFIX[args.format])

    in_process_h5 = args.format in ("keras", "h5") and not args.bounded

    def one_input(data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data)
        try:
            read(path)
        except lf.LstmFastError:
            pass
        except Exception as e:
            if not (in_process_h5 and _raised_in_h5py(e)):
                raise

    atheris.Setup([sys.argv[0], *libfuzzer], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
