"""Function-space (Gaussian-process) Laplace: the curvature on a subset of the data or by Nystrom,
and the posteriors that have no density over all the weights (``hessian_structure="gp"``)."""
