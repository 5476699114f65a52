"""The developer runtime of perlinsos: what `perlinsos up`, `make run` and the tests run on
a machine without Docker. The embedded broker and PostgreSQL (`embedded`), the supervised
stack of four service processes on them (`stack`, with the logins and agency keys it makes,
`provisioning`), the synthetic cohort (`cohort`), an agency's side of the topics (`agency`),
and the fake SMS provider (`fake_twilio`). Services never import it, so their images carry
neither the broker binary nor the PostgreSQL server; the services' tests use it, and never
the `perlinsos` CLI package."""
