"""`python -m orderpally_verify`: see the package's docstring."""

from orderpally_verify import main

raise SystemExit(main())
