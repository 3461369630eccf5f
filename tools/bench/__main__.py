"""``python -m tools.bench``: the bench's command line (tools/bench/__init__.py)."""
from smallgpt.cli import run_main
from tools.bench import main

run_main(main)
