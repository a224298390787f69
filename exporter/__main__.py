from __future__ import annotations

from exporter.cli import main

raise SystemExit(main())
