"""On-demand stress scripts (run as ``python -m tests.stress.<name>``); pytest collects none of them."""
