"""The command line: ``segnext-hub`` and ``segnext-convert``, thin click layers over the API.

Commands hold no logic the Python API lacks; they import their task on call, so that
``--help`` and the commands that need no model start without importing torch.
May import everything else in the package; nothing imports cli.
"""
