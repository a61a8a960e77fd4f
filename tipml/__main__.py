from tipml.cli import app

app()
