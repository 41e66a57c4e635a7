"""Jobs: the durable job queue that is the outbox of every domain (``queue``), and the periodic
maintenance of the ledger (``periodic``); both run in ``zhangfang worker`` or inside the API server."""
