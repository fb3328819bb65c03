from faregate.cli import main

raise SystemExit(main())
