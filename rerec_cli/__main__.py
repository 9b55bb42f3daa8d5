"""`python -m rerec_cli ...` (what `accelerate launch -m rerec_cli train ...` runs)."""

from rerec_cli.main import main

main()
