"""`python -m benchmarks.scale`: an archive of a million clips (issue 22), without the model.

    plan.py      the backfill's plan: time to the first model call, the driver's memory
    index.py     search: the search index against the brute force; `autotag search`
    data.py      the libraries and queries search is measured on (candidates.py: the choice)
    uptodate.py  `autotag --once` over a million unchanged files; the store's bytes per clip
"""
