"""Datasets: the layout registry (layouts), image and mask loading (images), the demo dataset (synth: photo crops
and the writer; defects: the defect library shared with validation), file-list fingerprints (fingerprint)."""
