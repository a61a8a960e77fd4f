from tipml.cli import run

run()
