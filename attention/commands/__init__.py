"""The command groups of ``attention``: one module each, with ``register(commands)`` adding its parsers.

``attention.cli`` builds the top-level parser from them and runs the chosen handler.
"""
