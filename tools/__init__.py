"""Tools that measure the product; the product never imports them.  Run each from the repository's
root as a module: ``python -m tools.bench`` (speed side by side), ``python -m tools.race`` (what each
option buys in a fixed time budget), ``python -m tools.longcontext`` (sampling past the context),
``python -m tools.gpu_check`` (the GPU path checked in stages, once, when a GPU is at hand)."""
