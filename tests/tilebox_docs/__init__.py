"""Workflow examples of the Tilebox documentation (github.com/tilebox/docs), one module per page,
as the docs write them but for their imports (``tilebox.workflows`` -> ``tilebox_core``): proof
that Tilebox task code runs here unchanged. tests/test_tilebox_docs.py runs them."""
