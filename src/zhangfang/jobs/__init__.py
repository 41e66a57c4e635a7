"""Jobs: periodic maintenance of the ledger (``periodic``), run by ``zhangfang jobs run`` or the API server."""
