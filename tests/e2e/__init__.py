"""End-to-end tests: the running app (uvicorn) driven by a real browser (Debian's chromium via Playwright)."""
