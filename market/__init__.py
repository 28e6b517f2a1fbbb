"""The market context: participants, grid, markets, orders and clearing.

``market`` never imports ``settlement``; the composition root finds every context through the
``flexmarket.contexts`` entry-point group (see :mod:`market.core.contexts`).
"""
