"""``python -m cli``: the `refunds` command (what the dev stack runs its children with)."""

from cli.main import main

main()
