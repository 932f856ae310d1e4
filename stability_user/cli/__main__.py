"""``python -m stability_user.cli``: the same as the ``stability-user`` command."""

from . import main

if __name__ == "__main__":
    main()
