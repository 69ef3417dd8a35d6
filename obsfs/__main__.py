from obsfs.cli import main

raise SystemExit(main())
