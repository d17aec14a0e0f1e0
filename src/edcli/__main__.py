"""`python -m edcli` runs the `ed` app."""

from edcli.cli import main

if __name__ == "__main__":
    main()
