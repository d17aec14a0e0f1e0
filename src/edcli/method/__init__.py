"""The ED method in pure torch: modules, Gaussian-prior maths, objective, scoring.

No files, HDF5, timm, typer or rich."""
