# Two commands: `make test` and `make book`. Each sets up .venv on first use (idempotent).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# pages `make book` executes at once (book/build_book.py --jobs)
BOOK_JOBS ?= 1
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export MPLBACKEND ?= Agg
export PYTHONHASHSEED ?= 0
export TRANSFORMERS_VERBOSITY ?= error

.PHONY: test book book-quick book-paper browser install clean

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# Every notebook executed by nbval (outputs of cells tagged nbval-check-output compared with the stored
# ones; notebooks/conftest.py keeps the executed copies for the quick book build); then the unit,
# integration and site tests, whose quick book build renders those copies. Each part runs two files at a time
# with one torch thread each (pytest-xdist; a file's tests, a notebook's cells, stay on one worker). Both parts
# always run; make test fails if either failed. All of it is the small preset: results/small,
# book/executed/small, _build/small; what `make book` built (results/book, book/executed/book, _build/book)
# is left alone.
test: $(STAMP) browser
	$(PY) -m pytest -q notebooks --nbval-lax --nbval-sanitize-with book/nbval_sanitize.cfg -p no:cacheprovider \
		-n 2 --dist loadfile; notebooks=$$?; \
	$(PY) -m pytest -q tests -p no:cacheprovider -n 2 --dist loadfile; tests=$$?; \
	test $$notebooks -eq 0 && test $$tests -eq 0

book: $(STAMP) browser
	$(PY) book/build_book.py --preset book --jobs $(BOOK_JOBS)
	$(PY) book/check_site.py _build/book/_build/html

# The book with each notebook's own (small) parameters; the tests build this one.
book-quick: $(STAMP) browser
	$(PY) book/build_book.py --preset small
	$(PY) book/check_site.py _build/small/_build/html

# The paper's settings (book/params.yml, preset paper) on a GPU with the models and datasets in the local Hugging
# Face cache; offline with something missing it stops at once and names it.
book-paper: $(STAMP) browser
	$(PY) book/build_book.py --preset paper
	$(PY) book/check_site.py _build/paper/_build/html

# Headless Chromium + driver for the site checks (Debian packages; needs root, as on CI).
browser:
	(command -v chromium && command -v chromedriver) >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver)

clean:
	rm -rf _build .stamps
