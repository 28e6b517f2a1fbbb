"""The grid: congestion points as a radial tree, optional sensitivities for meshed grids."""
