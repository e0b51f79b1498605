"""Circuits and universality: the weights between units, editing them, a network written by
hand, and comparing two networks (the three claims of "Zoom In", Olah et al. 2020).

Import the parts from their modules (``seethrough.circuits.weights`` and so on); this package
imports nothing heavy.
"""
