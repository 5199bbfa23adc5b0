"""``python -m fulmen.cli``."""

from fulmen.cli import main

raise SystemExit(main())
