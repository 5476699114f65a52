"""The fault suite (`make test-faults`) and the soak (`make soak`).

`harness.py` runs the embedded stack as `perlinsos up` does (supervised) and drives
agency submissions through it; `cases.py` is the table of faults; `test_faults.py` runs
each case against a fault-free run of the same submissions and prints one table;
`soak.py` keeps intake going at a fixed rate with faults now and then and samples
memory, consumer lag and outbox backlog. See docs/RELIABILITY.md.
"""
