"""The ``vlparse`` commands, one module each with ``add_parser(sub)`` (which sets the ``run``
default of its parser) and ``run(args)``. They import only the standard library and the config
at module level: what a command needs is imported when it runs."""

from vlparse.commands import (
    ablate,
    convert_checkpoint,
    data,
    evaluate,
    figure,
    finetune,
    info,
    pretrain,
    pretrain_parser,
    probe,
    quickstart,
)

COMMANDS = (quickstart, pretrain, pretrain_parser, data, finetune, evaluate, probe, ablate, info,
            figure, convert_checkpoint)
"""In the order of ``vlparse --help``."""

__all__ = ["COMMANDS"]
