"""Where a model comes from when it is a Keras or PyTorch checkpoint: the ``--from``/``--prefix``/
``--key``/... options shared by ``lstm-fast convert``, ``verify`` and ``bench``, and the
conversion those options ask for."""

from __future__ import annotations

import argparse
from typing import Any

from .converters.source import identify

__all__ = ["add_source_options", "convert_source", "torch_options"]


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
    p.add_argument("--return-last", dest="head", action="store_const", const="last",
                   help="torch: the recurrent layers return only their last (valid) step, so "
                        "the Linear layers apply to it, as a classifier on h_n[-1] does "
                        "(default: every step)")
    # the older spelling of --return-last (--head last / --head sequence), still accepted
    p.add_argument("--head", choices=("sequence", "last"), help=argparse.SUPPRESS)
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
    kind = args.framework or identify(path).framework
    if kind == "keras":
        from .converters.keras import spec_from_keras_file

        return spec_from_keras_file(path, config=args.config), kind
    from .converters.torch import spec_from_torch_file

    return spec_from_torch_file(path, **torch_options(args)), kind

