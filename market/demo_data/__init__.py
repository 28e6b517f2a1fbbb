"""Data shipped for ``flexmarket demo``: three SimBench LV grids and a winter day of their profiles.

``simbench_lv.json`` is derived from SimBench under the Open Database License (see its ``about``
header); :mod:`market.demo_data.derive_simbench` regenerates it (``pip install -e '.[simbench]'``),
and :mod:`market.demo_data.simbench_lv` reads it.
"""
