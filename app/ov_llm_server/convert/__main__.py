from ov_llm_server.convert.cli import main

raise SystemExit(main())
