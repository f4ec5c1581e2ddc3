"""Where a model comes from when it is a Keras or PyTorch checkpoint: the ``--from``/``--prefix``/
``--key``/... options shared by ``lstm-fast convert``, ``verify`` and ``bench``, the sniffing of a
file's framework, and the conversion those options ask for."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_source_options", "convert_source", "detect_framework", "torch_options"]


def add_source_options(p: Any) -> None:
    """Add the checkpoint options (``--from``, ``--prefix``, ``--key``, ...) to ``p``.

    Parameters
    ----------
    p : argparse.ArgumentParser or argument group
        Where the options go.
    """
    p.add_argument("--from", dest="framework", choices=("torch", "keras"),
                   help="source framework (default: detected from the file)")
    p.add_argument("--prefix", action="append",
                   help="torch: the recurrent module to convert (e.g. 'decoder.rnn'); scopes "
                        "the conversion to it and its Embedding/Linear neighbours under the "
                        "same parent, every other tensor is ignored (and summarised). Repeat "
                        "to chain several in order")
    p.add_argument("--ignore", action="append", metavar="GLOB",
                   help="torch: drop the tensors matching GLOB (e.g. 'similarity_*'); "
                        "repeatable")
    p.add_argument("--key", help="torch: entry of a training checkpoint holding the state dict "
                                 "(e.g. 'model_state_dict'; default: detected)")
    p.add_argument("--head", choices=("sequence", "last"),
                   help="torch: apply Linear layers at every step (default) or to the last "
                        "(valid) step only, as a classifier on h_n[-1] does")
    p.add_argument("--activations", help="torch: comma-separated activations, one per Linear "
                                         "layer after the recurrent module, or one more to "
                                         "apply the first to the recurrent output (default: "
                                         "linear)")
    p.add_argument("--head-norm", choices=("l2",),
                   help="torch: divide each output vector by its L2 norm (embeddings)")
    p.add_argument("--nonlinearity", choices=("tanh", "relu"),
                   help="torch: the nonlinearity of nn.RNN layers (a state dict does not "
                        "record it; default tanh)")
    p.add_argument("--config", help="keras: architecture JSON (model.to_json()) for a "
                                    "save_weights .h5 file")


def detect_framework(path: str) -> str:
    """'torch' or 'keras' from a checkpoint's first bytes (and, for zips, its entries)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89HDF"):
        return "keras"
    if head.startswith(b"PK"):
        import zipfile

        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except Exception:  # noqa: BLE001 - a damaged zip: the reader says what is wrong
            return "keras" if path.endswith(".keras") else "torch"
        if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
            return "keras"
        return "torch"
    if path.endswith((".keras", ".h5", ".hdf5")):
        return "keras"
    return "torch"


_TORCH_DEFAULTS = {"prefix": None, "key": None, "ignore": [], "head": "sequence",
                   "activations": None, "nonlinearity": "tanh", "head_norm": None}


def torch_options(args: argparse.Namespace, recorded: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """The torch conversion options: the flags given, else the recorded ones, else defaults."""
    given = {"prefix": args.prefix,
             "key": args.key, "ignore": args.ignore, "head": args.head,
             "activations": args.activations.split(",") if args.activations else None,
             "nonlinearity": args.nonlinearity, "head_norm": args.head_norm}
    out = dict(_TORCH_DEFAULTS)
    if recorded and not any(v for v in given.values()):
        out.update({k: v for k, v in recorded.items() if k in out})
    out.update({k: v for k, v in given.items() if v})
    return out


def convert_source(args: argparse.Namespace, path: str) -> tuple[Any, str]:
    """Convert the checkpoint ``path`` with the options in ``args``.

    Returns
    -------
    spec : ModelSpec
        The converted model.
    kind : str
        ``"torch"`` or ``"keras"``.
    """
    kind = args.framework or detect_framework(path)
    if kind == "keras":
        from .converters.keras import spec_from_keras_file

        return spec_from_keras_file(path, config=args.config), kind
    from .converters.torch import spec_from_torch_file

    return spec_from_torch_file(path, **torch_options(args)), kind

