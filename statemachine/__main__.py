"""``python -m statemachine``: the same command line as the ``statemachine`` script."""

from statemachine import cli

if __name__ == "__main__":
    cli.main()
