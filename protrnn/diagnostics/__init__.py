"""Gradient-flow diagnostics: how far back-propagation through time reaches in a model, and what that says about fit.

Modules (docs/diagnostics.md defines every quantity and rule):

* :mod:`~protrnn.diagnostics.results`: result types and their JSON file (torch-free; what readers such as the report
  import);
* :mod:`~protrnn.diagnostics.fit`: the effective-horizon rule, reference losses and the fit diagnosis (torch-free);
* :mod:`~protrnn.diagnostics.gradients`: the autograd measurements and the training loss by chain length (torch);
* :mod:`~protrnn.diagnostics.callback`: :class:`GradientFlowCallback` for Lightning training;
* :mod:`~protrnn.diagnostics.run`: the ``protrnn diagnose`` pipeline;
* :mod:`~protrnn.diagnostics.synthetic`: the planted-distance recall task behind ``protrnn synthetic``;
* :mod:`~protrnn.diagnostics.jacobians`: gradient-norm statistics under clipping and recurrent Jacobian norms.

This package module imports nothing, so ``import protrnn.diagnostics.results`` never loads torch.
"""
