"""``python -m calipers`` runs the command line."""

from calipers.cli import main

if __name__ == "__main__":
    main()
