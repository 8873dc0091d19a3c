from amulet_audit.cli import main

raise SystemExit(main())
