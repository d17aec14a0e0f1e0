"""Datasets: the layout registry (layouts), image and mask loading (images), the demo dataset (synth)."""
