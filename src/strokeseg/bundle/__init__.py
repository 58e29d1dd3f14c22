"""Bundle tooling: the offline checks of bundles.md (`strokeseg verify`)."""
