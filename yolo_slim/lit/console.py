"""Our callbacks' INFO lines on the console when nothing configured logging, as Lightning's own are."""

from __future__ import annotations

import logging

PACKAGE_LOGGER = "yolo_slim"


def show_info_lines() -> None:
    """Give the ``yolo_slim`` logger a console handler at INFO when the program configured no logging.

    SlimCallback's "pruned at epoch N: K of M channels removed" is INFO, and Python's default (the
    last-resort handler, WARNING and above) would drop it in a plain script with a Lightning Trainer. Lightning
    does the same for its own logger (``lightning/pytorch/__init__.py``: a StreamHandler when the root logger
    has none, and no propagation); here it happens when a fit starts, not on import. A program that configured
    logging (Hydra's CLI, ``logging.basicConfig``, pytest) keeps its own set-up: nothing changes then. As with
    Lightning's, a root handler added after that first fit does not get yolo_slim's lines (configure logging
    first, or give the ``yolo_slim`` logger a handler of its own), and a level set on ``yolo_slim`` is kept.
    """
    package = logging.getLogger(PACKAGE_LOGGER)
    if logging.getLogger().hasHandlers() or package.handlers:
        return
    package.addHandler(logging.StreamHandler())
    if package.level == logging.NOTSET:  # a level the program chose for yolo_slim stays
        package.setLevel(logging.INFO)
    package.propagate = False  # a root handler added later would otherwise print each line twice
