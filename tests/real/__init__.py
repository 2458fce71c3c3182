"""The real-engine contract suite (README.md here): run by `make test-real`, never by `make test`."""
