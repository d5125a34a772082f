"""``python -m stainshift`` runs the command line."""

from stainshift.cli.main import main

raise SystemExit(main())
