from .cli import main, run

run(main)
