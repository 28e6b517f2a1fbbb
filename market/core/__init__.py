"""Cross-cutting infrastructure shared by every context: settings, database, errors, HTTP edge, jobs."""
