"""The tiny search file that the engine and population tests share (imported from tests/, which pytest puts
on the path)."""


def tiny_search_text(budget: str, *, trials: int = 4, pruner: str = "none") -> str:
    """A search over the paper's two settings on top of ``recipes/tiny.toml``; ``budget`` is the body of its
    ``set`` table, for example ``'"train.epochs" = 2'``."""
    return f"""recipe = "recipes/tiny.toml"
trials = {trials}
seed = 5
set = {{ {budget} }}
[space."train.learning_rate"]
low = 1e-4
high = 1e-2
log = true
[space."model.where.std"]
low = 0.03
high = 0.3
log = true
[pruner]
name = "{pruner}"
startup_trials = 1
"""
