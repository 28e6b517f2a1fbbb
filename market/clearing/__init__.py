"""Clearing: a convex auction per ISP, and across ISPs where offers link them (MARKET.md, Clearing).

``book`` (inputs), ``model`` (the LP/MILP as sparse matrices, one ``add_*`` per constraint family),
``decompose`` (which ISPs are coupled), ``solve`` (cvxpy with HiGHS or Clarabel), ``pricing``
(solver-independent prices) and ``engine`` (the whole clearing) are pure: no database, no I/O.
"""
