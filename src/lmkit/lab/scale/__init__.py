"""Scaling laws (``lmkit scale``): IsoFLOP sweeps, the Chinchilla Approach 1-3 fits and their plots.

One module per concept: ``sweep`` (the runs of a sweep and ``points.csv``), ``points`` (reading
and bounding the points a fit takes), ``fit`` (Approaches 1 and 2 and the L(C) frontier, pure),
``approach3`` (the parametric law, batched L-BFGS and bootstrap intervals), ``fit_folder`` (what a
fit writes, and where) and ``plots`` (the PNG pictures of a fit). Nothing is re-exported here:
import from the module.
"""
