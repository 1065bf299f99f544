# Shortcuts; the README's two commands are the source of truth.
.PHONY: setup main test export clean-nbs bench
setup: ; bash scripts/dev.sh setup
main: ; bash scripts/dev.sh main
test: ; bash scripts/dev.sh test
export: ; .venv/bin/nbdev_export && .venv/bin/nbdev_clean
bench: ; for f in benchmarks/bench_*.py; do .venv/bin/python $$f; done
