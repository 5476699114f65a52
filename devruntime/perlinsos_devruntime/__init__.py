"""The developer runtime of perlinsos: what `perlinsos up` and the tests run on a machine
without Docker (the embedded broker and PostgreSQL). Services never import it, so their
images carry neither the broker binary nor the PostgreSQL server."""
