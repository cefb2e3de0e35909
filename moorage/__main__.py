from moorage.cli.main import cli

cli()
